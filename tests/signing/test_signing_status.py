"""Expiry policy per role and `ota repo status`: versions, expiry, thresholds, warnings."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import typer
from tuf.api.metadata import Metadata, Timestamp
from typer.testing import CliRunner, Result

from signing.cli import repo_app
from signing.delegation import DelegationPolicy
from signing.keys import ExpiryPolicy, default_storage, init_keys, key_paths, load_signer
from signing.repo import publish_release
from signing.status import WarnMargins, repo_status
from signing.testing import snapshot_tree, write_image
from signing.tufmeta import utc_now


def _status(repo: Path, *extra: str) -> Result:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(repo_app, name="repo")
    return CliRunner().invoke(app, ["repo", "status", "--repo", str(repo), *extra])


def test_status_shows_every_role_with_threshold_and_keys(tmp_path: Path) -> None:
    init_keys(tmp_path, root_keys=3, root_threshold=2)
    result = _status(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    roles = {r["role"]: r for r in json.loads(result.stdout)["roles"]}
    assert set(roles) == {"root", "targets", "snapshot", "timestamp"}
    assert roles["root"]["threshold"] == 2
    assert len(roles["root"]["keyids"]) == 3
    assert all(r["problem"] == "" for r in roles.values())
    assert result.stderr == ""
    text = _status(tmp_path)
    assert "threshold 2/3" in text.stdout


def test_expiry_policy_is_per_role_and_warns_before_expiry(tmp_path: Path) -> None:
    init_keys(tmp_path, expiry=ExpiryPolicy(root=20, targets=10, snapshot=7, timestamp=1))
    statuses = {s.role: s for s in repo_status(default_storage(tmp_path))}
    assert statuses["root"].problem == "warning"  # 20 days < 30 days' margin
    assert statuses["targets"].problem == "warning"  # 10 days < 14
    assert statuses["snapshot"].problem == ""
    assert statuses["timestamp"].problem == ""  # a day left: more than 6 h
    later = repo_status(default_storage(tmp_path), now=utc_now() + timedelta(hours=20))
    assert {s.role: s.problem for s in later}["timestamp"] == "warning"
    tight = WarnMargins(timestamp=timedelta(hours=30))
    assert {s.role: s.problem for s in repo_status(default_storage(tmp_path), margins=tight)}[
        "timestamp"
    ] == "warning"
    result = _status(tmp_path)
    assert result.exit_code == 0
    assert "warning: root expires in" in result.stderr


def test_expired_timestamp_exits_1(tmp_path: Path) -> None:
    init_keys(tmp_path)
    path = tmp_path / "repository/metadata/timestamp.json"
    md = Metadata[Timestamp].from_file(str(path))
    md.signed.expires = utc_now() - timedelta(minutes=5)
    md.signed.version += 1
    md.signatures.clear()
    md.sign(load_signer(key_paths(tmp_path, "timestamp")[0]))
    md.to_file(str(path))
    result = _status(tmp_path)
    assert result.exit_code == 1
    assert "error: timestamp expired" in result.stderr
    assert "EXPIRED" in result.stdout


def test_status_of_a_tampered_repository_is_one_clear_line(tmp_path: Path) -> None:
    init_keys(tmp_path)
    path = tmp_path / "repository/metadata/timestamp.json"
    path.write_bytes(path.read_bytes().replace(b'"version": 1', b'"version": 7'))
    before = snapshot_tree(tmp_path)
    result = _status(tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "ota: error: metadata/timestamp.json: timestamp metadata is not signed by its keys"
    )
    assert "(in LocalStorage(" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot_tree(tmp_path) == before


def test_status_of_a_missing_repository(tmp_path: Path) -> None:
    result = _status(tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "1.root.json is missing" in result.stderr


def test_status_lists_channel_roles_and_their_bins(tmp_path: Path) -> None:
    init_keys(tmp_path)
    policy = DelegationPolicy(bin_threshold=1, bin_bits=1)
    for version in ("1.0", "1.1"):
        image = write_image(tmp_path / f"{version}.img", 500)
        publish_release(
            tmp_path, image, version=version, channel="stable", model="rpi4", delegation=policy
        )
    result = _status(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    roles = {r["role"]: r for r in json.loads(result.stdout)["roles"]}
    assert {"stable", "stable.bin-0", "stable.bin-1"} <= set(roles)
    assert roles["stable.bin-0"]["keyids"] == roles["stable"]["keyids"]
