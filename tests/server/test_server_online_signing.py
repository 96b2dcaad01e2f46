"""The server keeps the timestamp fresh holding only the online keys."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from lab.processes import live_server
from server.online_signing import OnlineRoleRenewer
from server.settings import Settings
from signing.keys import init_keys, key_paths


def _timestamp_version(repo: Path) -> int:
    data = json.loads((repo / "repository" / "metadata" / "timestamp.json").read_bytes())
    return int(data["signed"]["version"])


def _online_keys(repo: Path, to: Path) -> Path:
    """A folder with the timestamp and snapshot keys and nothing else, as a server has."""
    to.mkdir(mode=0o700)
    for role in ("timestamp", "snapshot"):
        for path in key_paths(repo, role):
            shutil.copy2(path, to / path.name)
    return to


def test_the_server_re_signs_the_timestamp_with_online_keys_only(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_keys(repo)
    keys = _online_keys(repo, tmp_path / "online")
    before = _timestamp_version(repo)
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 's.db'}",
        repo_dir=repo / "repository",
        online_keys_dir=keys,
        online_renew_s=0.2,
    )
    with live_server(settings):
        deadline = time.monotonic() + 20
        while _timestamp_version(repo) < before + 2:  # re-signed on start, then on the timer
            assert time.monotonic() < deadline, "the timestamp was never re-signed"
            time.sleep(0.1)


def test_without_the_keys_nothing_changes_and_nothing_crashes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_keys(repo)
    empty = tmp_path / "empty"
    empty.mkdir()
    snapshot = (repo / "repository" / "metadata" / "timestamp.json").read_bytes()
    renewer = OnlineRoleRenewer.for_repo(repo / "repository", empty, interval_s=0)
    assert renewer.tick() == []
    assert (repo / "repository" / "metadata" / "timestamp.json").read_bytes() == snapshot
