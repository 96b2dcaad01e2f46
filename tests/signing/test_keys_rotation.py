"""`ota keys rotate`: every role, root included; devices on an old root follow the chain."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from tuf.api.metadata import Metadata
from typer.testing import CliRunner

from signing.cli import keys_app
from signing.delegation import DelegationPolicy
from signing.errors import KeysError
from signing.keys import default_storage, init_keys, key_paths, load_signer
from signing.repo import publish_release
from signing.rotation import rotate_key
from signing.state import load_state
from signing.testing import TufClient, serve_directory, snapshot_tree, write_image


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    init_keys(repo, root_keys=3, root_threshold=2)
    shutil.copy(repo / "root.json", tmp_path / "provisioned-root.json")
    policy = DelegationPolicy(bin_threshold=1, bin_bits=1)
    for version in ("1.0", "1.1"):
        image = write_image(tmp_path / f"{version}.img", 1500)
        publish_release(
            repo, image, version=version, channel="stable", model="rpi4", delegation=policy
        )
    return repo


def _device_fetches(repo: Path, workdir: Path, target: str) -> None:
    provisioned = (repo.parent / "provisioned-root.json").read_bytes()
    with serve_directory(repo / "repository") as url:
        info, _ = TufClient(workdir, url, provisioned).fetch(target)
    assert info.path == target


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "stable", "root"])
def test_rotating_any_role_keeps_old_devices_updating(
    repo: Path, tmp_path: Path, role: str
) -> None:
    target = "rpi4/stable/1.1/1.1.img"
    _device_fetches(repo, tmp_path / "device", target)
    before = {
        r: list(load_state(default_storage(repo)).delegator(r).get_delegated_role(r).keyids)
        for r in ("root", "targets", "snapshot", "timestamp", "stable")
    }
    old = before[role][0]
    done = rotate_key(repo, role, revoke=old[:10])
    state = load_state(default_storage(repo))
    after = list(state.delegator(role).get_delegated_role(role).keyids)
    assert old not in after
    assert done.added in after
    assert len(after) == len(before[role])
    assert load_signer(done.key_file).public_key.keyid == done.added
    assert (repo / "keys/retired" / f"{role}-{old[:16]}.pem").is_file()
    top_level = role != "stable"
    assert state.root.signed.version == (2 if top_level else 1)
    assert Metadata.from_bytes((repo / "root.json").read_bytes()).signed.version == (
        2 if role == "root" else 1
    )
    _device_fetches(repo, tmp_path / "device", target)  # the same device, cache and all
    _device_fetches(repo, tmp_path / "fresh", target)  # a new one with the old root

    image = write_image(tmp_path / "1.2.img", 1500)
    release = publish_release(repo, image, version="1.2", channel="stable", model="rpi4")
    _device_fetches(repo, tmp_path / "device", release.target_path)


def test_a_root_rotation_needs_the_old_threshold(repo: Path) -> None:
    key_paths(repo, "root", 3)[1].unlink()
    key_paths(repo, "root", 3)[2].unlink()
    before = snapshot_tree(repo)
    with pytest.raises(KeysError, match="needs 2 signatures of the old root keys"):
        rotate_key(repo, "timestamp")
    assert snapshot_tree(repo) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuchrole"], "unknown role 'nosuchrole': the roles are root, targets"),
        (["root"], "root has 3 keys: say which to replace with --revoke"),
        (["timestamp", "--revoke", "deadbeefdeadbeef"], "is not a key id of timestamp"),
        (["timestamp", "--revoke", "ab"], "is not a key id of timestamp"),
    ],
)
def test_bad_rotation_input_is_one_line_and_changes_nothing(
    repo: Path, args: list[str], message: str
) -> None:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(keys_app, name="keys")
    before = snapshot_tree(repo)
    result = CliRunner().invoke(app, ["keys", "rotate", *args, "--repo", str(repo)])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ota: error: ")
    assert message in line
    assert snapshot_tree(repo) == before


def test_rotate_from_the_command_line(repo: Path) -> None:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(keys_app, name="keys")
    result = CliRunner().invoke(app, ["keys", "rotate", "snapshot", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    assert "snapshot: revoked" in result.stdout
    assert result.stdout.rstrip().endswith("metadata/timestamp.json")
