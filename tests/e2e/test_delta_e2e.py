"""A delta end to end: `publish_release` makes it by default from the previous release, the
real server announces the build, and the agent (built from its config, as `ota-agent run`
builds it) installs it from the delta, reading its running slot; the server hears how."""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.daemon import build_agent
from agent.identity import device_key_or_new, save_broker_secret
from agent.server_api import ServerApi
from hardware.bootcontrol import Slot
from hardware.sim import SimDevice
from lab.processes import live_server
from server.settings import Settings
from signing.keys import init_keys
from signing.notify import notify_server
from signing.repo import PublishedRelease, publish_release, target_storage_name
from wire import UpdateState, delta_target_name

MODEL = "board"
ADMIN = "admin-token"
ENROLL = "enroll-token"
MIB = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    init_keys(tmp_path / "repo")
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'server.db'}",
        repo_dir=tmp_path / "repo" / "repository",
        admin_token=ADMIN,
        enrollment_token=ENROLL,
    )
    with live_server(settings) as url:
        yield url


def image(tmp: Path, version: str) -> Path:
    """3 MiB builds that differ in a few 4 KiB blocks."""
    blocks = [random.Random(n).randbytes(4096) for n in range(768)]
    for n in random.Random(version).sample(range(768), 12):
        blocks[n] = random.Random(f"{version}-{n}").randbytes(4096)
    path = tmp / f"rom-{version}.img"
    path.write_bytes(b"".join(blocks))
    return path


def publish(tmp: Path, server: str, version: str) -> PublishedRelease:
    release = publish_release(
        tmp / "repo", image(tmp, version), version=version, channel="stable", model=MODEL
    )
    notify_server(server, ADMIN, release)
    return release


def reports(server: str, device_id: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{server}/api/v1/reports?device_id={device_id}&limit=1000",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return sorted(json.loads(resp.read()), key=lambda r: r["seq"])


def test_the_agent_installs_the_published_delta(tmp_path: Path, server: str) -> None:
    sim = SimDevice.provision(tmp_path / "hw", slot_size=8 * MIB, model=MODEL)
    data_dir = tmp_path / "agent"  # the device's own key is made and kept here
    secret = ServerApi(server, "dev-1", device_key_or_new(data_dir)).enroll(ENROLL, MODEL, "stable")
    save_broker_secret(data_dir, secret)
    config = AgentConfig(
        device_id="dev-1",
        model=MODEL,
        channel="stable",
        server_url=server,
        broker_secret=secret,
        data_dir=data_dir,
        trusted_root=tmp_path / "repo" / "root.json",
        health_deadline_s=5.0,
    )
    agent = build_agent(config, boot=sim)
    agent.resume()
    publish(tmp_path, server, "1.0")
    agent.poll_once()
    assert (agent.record.state, agent.current_version) == (UpdateState.COMMITTED, "1.0")

    new = publish(tmp_path, server, "2.0")
    full = tmp_path / "repo" / "repository" / target_storage_name(new.target_path, new.sha256)
    full.unlink()  # only the delta can bring 2.0 now
    agent.poll_once()

    assert (agent.record.state, agent.current_version) == (UpdateState.COMMITTED, "2.0")
    assert sim.status().active is Slot.A
    with sim.slot_path(Slot.A).open("rb") as slot:
        assert slot.read(new.length) == image(tmp_path, "2.0").read_bytes()
    installed = [r for r in reports(server, "dev-1") if r["state"] == "installed"][-1]
    assert installed["detail"]["delta"] == delta_target_name(new.target_path, "1.0")
