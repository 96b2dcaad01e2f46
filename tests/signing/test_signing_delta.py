"""Deltas at publish time: made from the previous release (or each --delta-from), signed with
the image, checked the way a device reads them (python-tuf's ngclient over loopback HTTP)."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from romdelta.apply import apply_patch
from signing.cli import release_app
from signing.errors import PublishError
from signing.keys import init_keys
from signing.repo import PublishedRelease, list_deltas, list_releases, publish_release
from signing.testing import TufClient, serve_directory, snapshot_tree
from wire import DeltaCustom, delta_target_name

BS = 4096


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    init_keys(tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture
def base_url(repo: Path) -> Iterator[str]:
    with serve_directory(repo / "repository") as url:
        yield url


def build(tmp: Path, version: str, seed: int = 1) -> Path:
    """Builds that share most blocks: each version edits a few of the same base blocks."""
    rng = random.Random(seed)
    blocks = [rng.randbytes(BS) for _ in range(96)]
    edit = random.Random(version)
    for index in edit.sample(range(96), 6):
        blocks[index] = blocks[index][:50] + edit.randbytes(20) + blocks[index][70:]
    path = tmp / f"rom-{version}.img"
    path.write_bytes(b"".join(blocks))
    return path


def publish(repo: Path, image: Path, version: str, **kw: object) -> PublishedRelease:
    return publish_release(repo, image, version=version, channel="stable", model="rpi4", **kw)  # type: ignore[arg-type]


def test_a_release_brings_a_delta_from_the_previous_one(
    repo: Path, tmp_path: Path, base_url: str
) -> None:
    old = publish(repo, build(tmp_path, "1.0"), "1.0")
    new_image = build(tmp_path, "2.0")
    new = publish(repo, new_image, "2.0")
    assert [d.custom.source_version for d in list_deltas(repo)] == ["1.0"]
    path = delta_target_name(new.target_path, "1.0")

    info, patch = TufClient(tmp_path / "dev", base_url, (repo / "root.json").read_bytes()).fetch(
        path
    )
    assert DeltaCustom.from_custom(info.custom) == DeltaCustom(
        source_version="1.0",
        source_sha256=old.sha256,
        source_length=old.length,
        target_path=new.target_path,
        target_sha256=new.sha256,
        target_length=new.length,
    )
    assert len(patch) < new.length // 4
    out = io.BytesIO()
    apply_patch(io.BytesIO(patch), io.BytesIO(build(tmp_path, "1.0").read_bytes()), out)
    assert out.getvalue() == new_image.read_bytes()
    assert [r.version for r in list_releases(repo)] == ["1.0", "2.0"]  # a delta is no release


def test_deltas_from_named_versions_and_none_on_request(repo: Path, tmp_path: Path) -> None:
    for version in ("1.0", "1.1"):
        publish(repo, build(tmp_path, version), version)
    publish(repo, build(tmp_path, "2.0"), "2.0", delta_from=["1.0", "1.1"])
    publish(repo, build(tmp_path, "3.0"), "3.0", delta_from=[])
    made = sorted((d.custom.source_version, d.custom.target_path) for d in list_deltas(repo))
    assert made == [
        ("1.0", "rpi4/stable/1.1/rom-1.1.img"),  # the default one, from the previous release
        ("1.0", "rpi4/stable/2.0/rom-2.0.img"),
        ("1.1", "rpi4/stable/2.0/rom-2.0.img"),
    ]


def test_a_delta_from_an_unknown_version_fails_and_changes_nothing(
    repo: Path, tmp_path: Path
) -> None:
    publish(repo, build(tmp_path, "1.0"), "1.0")
    before = snapshot_tree(repo / "repository")
    with pytest.raises(PublishError, match=r"0\.9"):
        publish(repo, build(tmp_path, "2.0"), "2.0", delta_from=["0.9"])
    assert snapshot_tree(repo / "repository") == before


def test_a_missing_previous_image_means_no_default_delta(repo: Path, tmp_path: Path) -> None:
    old = publish(repo, build(tmp_path, "1.0"), "1.0")
    for stored in (repo / "repository" / "targets").rglob(f"{old.sha256}.*"):
        stored.unlink()  # e.g. pruned from storage
    publish(repo, build(tmp_path, "2.0"), "2.0")
    assert list_deltas(repo) == []
    with pytest.raises(PublishError, match="not in storage"):
        publish(repo, build(tmp_path, "3.0"), "3.0", delta_from=["1.0"])


def test_cli_publish_with_delta_from_prints_the_delta(repo: Path, tmp_path: Path) -> None:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(release_app, name="release")
    common = ["--repo", str(repo), "--channel", "stable", "--model", "rpi4", "--new-channel"]
    for version in ("1.0", "2.0"):
        args = ["release", "publish", str(build(tmp_path, version)), "--version", version]
        extra = ["--delta-from", "1.0"] if version == "2.0" else []
        result = CliRunner().invoke(app, [*args, *common, *extra])
        assert result.exit_code == 0, result.output
    assert "delta from 1.0: rpi4/stable/2.0/rom-2.0.img.from-1.0.delta" in result.output
    third = ["release", "publish", str(build(tmp_path, "3.0")), "--version", "3.0"]
    result = CliRunner().invoke(app, [*third, *common, "--no-delta"])
    assert result.exit_code == 0, result.output
    assert "delta from" not in result.output
