"""The online roles: the server re-signs timestamp and snapshot without any offline key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from signing.errors import KeysError
from signing.keys import ExpiryPolicy, default_storage, init_keys, key_paths
from signing.online import refresh_timestamp, renew_online_roles
from signing.repo import publish_release
from signing.state import load_state
from signing.testing import TufClient, serve_directory, snapshot_tree, write_image


def _server_keys(repo: Path, dest: Path) -> Path:
    """What the server holds: copies of the timestamp and snapshot keys, nothing else."""
    dest.mkdir()
    for role in ("timestamp", "snapshot"):
        shutil.copy(key_paths(repo, role)[0], dest / f"{role}.pem")
    return dest


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    init_keys(repo, expiry=ExpiryPolicy(snapshot=1))
    image = write_image(tmp_path / "rom.img", 5000)
    release = publish_release(
        repo, image, version="1.0", channel="stable", model="rpi4", expiry=ExpiryPolicy(snapshot=1)
    )
    return repo, release.target_path


def test_online_keys_alone_renew_and_devices_still_verify(
    tmp_path: Path, published: tuple[Path, str]
) -> None:
    repo, target = published
    keys = _server_keys(repo, tmp_path / "server-keys")
    storage = default_storage(repo)
    assert renew_online_roles(storage, keys) == ["snapshot", "timestamp"]
    assert renew_online_roles(storage, keys, expiry=ExpiryPolicy(snapshot=7)) == ["timestamp"]
    state = load_state(storage)
    assert (state.timestamp.signed.version, state.snapshot.signed.version) == (4, 3)
    assert state.targets.signed.version == 2  # targets untouched: its key is offline
    with serve_directory(repo / "repository") as url:
        client = TufClient(tmp_path / "device", url, (repo / "root.json").read_bytes())
        info, _ = client.fetch(target)
    assert info.path == target


def test_refresh_timestamp_works_when_root_and_targets_keys_are_absent(
    published: tuple[Path, str],
) -> None:
    repo, _ = published
    for role in ("root", "targets"):
        for path in key_paths(repo, role):
            path.unlink()
    written = refresh_timestamp(repo, default_storage(repo))
    assert written == ["metadata/3.snapshot.json", "metadata/timestamp.json"]
    assert refresh_timestamp(repo, default_storage(repo), expiry=ExpiryPolicy(snapshot=7)) == [
        "metadata/timestamp.json"
    ]


def test_a_key_of_the_wrong_role_is_refused_and_nothing_changes(
    tmp_path: Path, published: tuple[Path, str]
) -> None:
    repo, _ = published
    keys = tmp_path / "server-keys"
    keys.mkdir()
    shutil.copy(key_paths(repo, "snapshot")[0], keys / "snapshot.pem")
    shutil.copy(key_paths(repo, "targets")[0], keys / "timestamp.pem")
    before = snapshot_tree(repo)
    with pytest.raises(KeysError, match="is not a timestamp key of root version 1"):
        renew_online_roles(default_storage(repo), keys, expiry=ExpiryPolicy(snapshot=7))
    assert snapshot_tree(repo) == before
