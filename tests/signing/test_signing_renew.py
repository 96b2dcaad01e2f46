"""Renewing short-lived metadata between publishes, checked with python-tuf's ngclient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata

from signing.keys import ExpiryPolicy, init_keys, key_paths
from signing.renew import renew_metadata
from signing.repo import publish_release
from signing.testing import TufClient, serve_directory, write_image


def _signed(repo: Path, name: str) -> Any:
    md: Metadata[Any] = Metadata.from_bytes((repo / "repository/metadata" / name).read_bytes())
    return md.signed


@pytest.mark.parametrize(
    ("initial", "offline", "renewed"),
    [
        (ExpiryPolicy(), False, ["metadata/timestamp.json"]),
        (ExpiryPolicy(snapshot=1), False, ["metadata/3.snapshot.json", "metadata/timestamp.json"]),
        (ExpiryPolicy(targets=3), False, ["metadata/timestamp.json"]),  # targets is offline
        (
            ExpiryPolicy(targets=3),
            True,
            ["metadata/3.targets.json", "metadata/3.snapshot.json", "metadata/timestamp.json"],
        ),
    ],
)
def test_renew_re_signs_only_what_would_expire(
    tmp_path: Path, initial: ExpiryPolicy, offline: bool, renewed: list[str]
) -> None:
    repo = tmp_path / "repo"
    init_keys(repo, expiry=initial)
    image = write_image(tmp_path / "rom.img", 10_000)
    release = publish_release(
        repo, image, version="1.0", channel="stable", model="rpi4", expiry=initial
    )
    old_expiry = _signed(repo, "timestamp.json").expires

    assert renew_metadata(repo, offline=offline) == renewed

    timestamp = _signed(repo, "timestamp.json")
    assert timestamp.version == 3
    assert timestamp.expires >= old_expiry
    with serve_directory(repo / "repository") as url:
        client = TufClient(tmp_path / "device", url, (repo / "root.json").read_bytes())
        _, data = client.fetch(release.target_path)
    assert data == image.read_bytes()


def test_a_daily_renew_needs_only_the_timestamp_key(tmp_path: Path) -> None:
    init_keys(tmp_path, passphrase="pw")
    for role in ("root", "targets", "snapshot"):
        for path in key_paths(tmp_path, role):
            path.unlink()
    assert renew_metadata(tmp_path, passphrase="pw") == ["metadata/timestamp.json"]
