"""Bad input around the keys: under-threshold and tampered metadata, clock skew, an expired
root. Each is one clear line that says what and where, and the repository stays as it was."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import typer
from tuf.api.metadata import Metadata
from typer.testing import CliRunner, Result

from signing.cli import keys_app, release_app, repo_app
from signing.keys import ExpiryPolicy, init_keys
from signing.testing import snapshot_tree, write_image
from signing.tufmeta import utc_now

CLOCKED = ("renew", "repo", "staging", "channels", "online", "rotation", "status")


def _cli(*args: str) -> Result:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(keys_app, name="keys")
    app.add_typer(release_app, name="release")
    app.add_typer(repo_app, name="repo")
    return CliRunner().invoke(app, list(args))


def _refused(result: Result, *messages: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ota: error: ")
    for message in messages:
        assert message in line


def _publish(repo: Path, tmp_path: Path, version: str) -> Result:
    image = write_image(tmp_path / "rom.img", 1000, seed=len(version))
    return _cli(
        "release", "publish", str(image), "--repo", str(repo),
        "--version", version, "--channel", "stable", "--model", "rpi4", "--new-channel",
    )  # fmt: skip


def _set_clock(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    import signing.tufmeta

    monkeypatch.setattr(signing.tufmeta, "utc_now", lambda: moment)
    for name in CLOCKED:
        module = __import__(f"signing.{name}", fromlist=["utc_now"])
        monkeypatch.setattr(module, "utc_now", lambda: moment)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    init_keys(repo, expiry=ExpiryPolicy(root=3))
    assert _publish(repo, tmp_path, "1.0").exit_code == 0
    return repo


def _metadata(repo: Path, name: str) -> Path:
    return repo / "repository" / "metadata" / name


def test_under_threshold_metadata_is_refused(repo: Path, tmp_path: Path) -> None:
    path = _metadata(repo, "timestamp.json")
    md: Metadata = Metadata.from_bytes(path.read_bytes())  # type: ignore[type-arg]
    md.signatures.clear()
    path.write_bytes(md.to_bytes())
    before = snapshot_tree(repo)
    _refused(
        _publish(repo, tmp_path, "1.1"),
        "metadata/timestamp.json: timestamp metadata is not signed by its keys",
        "in LocalStorage(",
    )
    _refused(_cli("release", "renew", "--repo", str(repo)), "not signed by its keys")
    assert snapshot_tree(repo) == before


def test_tampered_pinned_metadata_is_refused(repo: Path) -> None:
    path = _metadata(repo, "2.snapshot.json")
    path.write_bytes(path.read_bytes().replace(b'"version": 2', b'"version": 2 '))
    before = snapshot_tree(repo)
    _refused(
        _cli("release", "renew", "--repo", str(repo)),
        "metadata/2.snapshot.json does not match what pins it",
    )
    assert snapshot_tree(repo) == before


def test_tampered_delegated_role_is_refused(repo: Path, tmp_path: Path) -> None:
    path = _metadata(repo, "1.stable.json")
    data = json.loads(path.read_bytes())
    data["signed"]["targets"]["rpi4/stable/9.9/rom.img"] = next(
        iter(data["signed"]["targets"].values())
    )
    path.write_bytes(json.dumps(data).encode())
    before = snapshot_tree(repo)
    _refused(
        _publish(repo, tmp_path, "1.1"),
        "metadata/1.stable.json: stable metadata is not signed by its keys",
    )
    _refused(_cli("repo", "status", "--repo", str(repo)), "1.stable.json")
    assert snapshot_tree(repo) == before


def test_a_clock_behind_the_repository_is_refused(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot_tree(repo)
    _set_clock(monkeypatch, utc_now() - timedelta(days=2))
    _refused(_cli("release", "renew", "--repo", str(repo)), "clock skew", "check this machine's")
    _refused(_publish(repo, tmp_path, "1.1"), "clock skew")
    _refused(_cli("keys", "rotate", "timestamp", "--repo", str(repo)), "clock skew")
    assert snapshot_tree(repo) == before


def test_an_expired_root_is_refused_and_a_root_rotation_recovers(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot_tree(repo)
    later = utc_now() + timedelta(days=4)
    _set_clock(monkeypatch, later)
    _refused(_publish(repo, tmp_path, "1.1"), "root version 1 expired", "ota keys rotate root")
    _refused(_cli("release", "renew", "--repo", str(repo)), "root version 1 expired")
    status = _cli("repo", "status", "--repo", str(repo))
    assert status.exit_code == 1
    assert "error: root expired" in status.stderr
    assert snapshot_tree(repo) == before

    assert _cli("keys", "rotate", "root", "--repo", str(repo)).exit_code == 0
    assert _publish(repo, tmp_path, "1.1").exit_code == 0


def test_unknown_key_for_a_staged_release_is_refused(repo: Path, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.pem"
    stranger.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    before = snapshot_tree(repo)
    _refused(
        _cli("release", "sign", "--repo", str(repo), "--key", str(stranger)),
        "nothing is waiting for signatures",
    )
    image = write_image(tmp_path / "rom.img", 1000, seed=9)
    staged = _cli(
        "release", "publish", str(image), "--repo", str(repo), "--version", "1.1",
        "--channel", "stable", "--model", "rpi4", "--stage",
    )  # fmt: skip
    assert staged.exit_code == 0, staged.output
    _refused(
        _cli("release", "sign", "--repo", str(repo), "--key", str(stranger)),
        f"cannot load key {stranger}",
    )
    assert "staged/stable.json" in str(sorted(p for p in snapshot_tree(repo) if "staged" in p))
    del before
