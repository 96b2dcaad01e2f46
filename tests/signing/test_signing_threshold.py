"""k-of-n roles and split signing: a release below threshold is never visible to devices."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from signing.channels import add_channel
from signing.cli import release_app
from signing.errors import PublishError
from signing.keys import RoleKeys, default_storage, init_keys, key_paths
from signing.repo import list_releases, publish_release
from signing.testing import TufClient, serve_directory, snapshot_tree, write_image


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The stable channel's role is 2-of-3; this engineer's folder holds only stable-1.pem."""
    repo = tmp_path / "repo"
    init_keys(repo)
    add_channel(repo, "stable", keys=RoleKeys(3, 2))
    elsewhere = tmp_path / "other-engineers"
    elsewhere.mkdir()
    for path in key_paths(repo, "stable", 3)[1:]:
        shutil.move(path, elsewhere / path.name)
    return repo


def _sign(repo: Path, key: Path, *extra: str) -> Result:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(release_app, name="release")
    args = ["release", "sign", "--repo", str(repo), "--key", str(key), *extra]
    return CliRunner().invoke(app, args)


def _one_error_line(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ota: error: ")
    assert message in line


def _device_sees(repo: Path, workdir: Path, target: str) -> bool:
    with serve_directory(repo / "repository") as url:
        client = TufClient(workdir, url, (repo / "root.json").read_bytes())
        return client.refresh().get_targetinfo(target) is not None


def test_one_key_of_two_cannot_publish_and_changes_nothing(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 3000)
    before = snapshot_tree(repo)
    with pytest.raises(PublishError, match="stable needs 2 signatures and the keys at hand make 1"):
        publish_release(repo, image, version="1.0", channel="stable", model="rpi4")
    assert snapshot_tree(repo) == before


def test_staged_release_is_invisible_until_the_second_signature(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 3000)
    release = publish_release(
        repo, image, version="1.0", channel="stable", model="rpi4", stage=True
    )
    assert list_releases(repo) == []
    assert not _device_sees(repo, tmp_path / "device", release.target_path)

    other = tmp_path / "other-engineers" / "stable-2.pem"
    signed = _sign(repo, other)
    assert signed.exit_code == 0, signed.output
    assert "2 of 2 signatures" in signed.stdout
    assert f"live: {release.target_path}" in signed.stdout
    assert [r.version for r in list_releases(repo)] == ["1.0"]
    assert _device_sees(repo, tmp_path / "device", release.target_path)  # same device, later

    _one_error_line(_sign(repo, other), "nothing is waiting for signatures")


def test_the_same_key_twice_does_not_meet_a_threshold(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 3000)
    publish_release(repo, image, version="1.0", channel="stable", model="rpi4", stage=True)
    again = _sign(repo, key_paths(repo, "stable", 3)[0])
    assert again.exit_code == 0, again.output
    assert "1 of 2 signatures" in again.stdout
    assert list_releases(repo) == []


def test_a_key_that_is_not_the_roles_is_refused(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 3000)
    publish_release(repo, image, version="1.0", channel="stable", model="rpi4", stage=True)
    before = snapshot_tree(repo)
    result = _sign(repo, key_paths(repo, "snapshot")[0])
    _one_error_line(result, "is not a stable key of targets version 2")
    assert snapshot_tree(repo) == before


def test_a_stale_proposal_is_refused(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 3000)
    publish_release(repo, image, version="1.0", channel="stable", model="rpi4", stage=True)
    for name in ("stable-2.pem", "stable-3.pem"):  # a colleague with enough keys publishes
        shutil.copy(tmp_path / "other-engineers" / name, repo / "keys" / name)
    publish_release(repo, image, version="1.1", channel="stable", model="rpi4")
    before = snapshot_tree(repo)
    _one_error_line(_sign(repo, repo / "keys" / "stable-2.pem", "--role", "stable"), "is stale")
    assert snapshot_tree(repo) == before


def test_a_tampered_proposal_is_refused(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 3000)
    publish_release(repo, image, version="1.0", channel="stable", model="rpi4", stage=True)
    staged = repo / "repository" / "staged" / "stable.json"
    staged.write_bytes(staged.read_bytes()[:-40])
    before = snapshot_tree(repo)
    _one_error_line(
        _sign(repo, tmp_path / "other-engineers" / "stable-2.pem"), "is not valid TUF metadata"
    )
    assert snapshot_tree(repo) == before
    assert default_storage(repo).exists("staged/stable.json")


def test_top_level_targets_can_be_k_of_n_too(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_keys(repo, layout={"targets": RoleKeys(2, 2)})
    key_paths(repo, "targets", 2)[1].unlink()
    image = write_image(tmp_path / "rom.img", 3000)
    before = snapshot_tree(repo)
    with pytest.raises(PublishError, match="targets needs 2 signatures"):  # a new channel
        publish_release(repo, image, version="1.0", channel="beta", model="rpi4")
    assert snapshot_tree(repo) == before  # no stray beta key either
