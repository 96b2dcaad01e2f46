"""Roll back to version V: V's image is signed again as a newer release, and a real device on
the later build installs it forwards (TUF and the agent never go down)."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.daemon import build_agent
from agent.server_api import ServerApi
from hardware.bootcontrol import Slot
from hardware.sim import SimDevice
from lab.processes import live_server
from server.settings import Settings
from signing.errors import PublishError
from signing.keys import init_keys
from signing.repo import publish_release
from signing.rollback import republish_as_rollback, rollback_version
from wire.versions import Version

KIB = 1024


def _image(tmp: Path, version: str) -> Path:
    image = tmp / f"rom-{version}.img"
    image.write_bytes(hashlib.sha256(version.encode()).digest() * (64 * KIB // 32))
    return image


def _notify(url: str, release_dict: dict[str, object]) -> None:
    request = urllib.request.Request(
        url + "/api/v1/releases",
        data=json.dumps(release_dict).encode(),
        method="POST",
        headers={"Authorization": "Bearer adm", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.mark.parametrize(("latest", "to"), [("2.0", "1.0"), ("2026.48", "2026.47"), ("9", "10")])
def test_the_rollback_version_sorts_after_the_latest(latest: str, to: str) -> None:
    assert Version(rollback_version(latest, to)) > Version(latest)
    assert Version(f"{latest}.1") > Version(rollback_version(latest, to))


def test_a_device_goes_forwards_to_the_old_image(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_keys(repo)
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 's.db'}",
        repo_dir=repo / "repository",
        admin_token="adm",
        enrollment_token="enr",
        rollout_tick_s=0,
    )
    with live_server(settings) as url:
        sim = SimDevice.provision(tmp_path / "hw", slot_size=256 * KIB, model="board")
        config = AgentConfig(
            device_id="dev-1",
            model="board",
            channel="stable",
            server_url=url,
            credential=ServerApi(url, "dev-1").enroll("enr", "board", "stable"),
            data_dir=tmp_path / "agent",
            trusted_root=repo / "root.json",
            health_deadline_s=2.0,
        )
        agent = build_agent(config, boot=sim)
        agent.resume()
        for version in ("1.0", "2.0"):
            release = publish_release(
                repo, _image(tmp_path, version), version=version, channel="stable", model="board"
            )
            _notify(url, release.to_dict())
            agent.poll_once()
        assert agent.current_version == "2.0"
        with pytest.raises(PublishError, match="never published"):
            republish_as_rollback(repo, to_version="0.9", channel="stable", model="board")
        back = republish_as_rollback(repo, to_version="1.0", channel="stable", model="board")
        assert back.version == "2.0-rollback-to-1.0"
        assert back.release_counter > release.release_counter
        _notify(url, back.to_dict())
        agent.poll_once()
    assert agent.current_version == "2.0-rollback-to-1.0"
    one = _image(tmp_path, "1.0").read_bytes()
    active = sim.status().active
    assert active is Slot.B  # start on a: 1.0 went to b, 2.0 to a, the rollback to b
    assert sim.slot_path(active).read_bytes()[: len(one)] == one
