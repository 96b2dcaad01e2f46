"""A lab for power-cut runs: the real server (live_server, SQLite), a signed repository, and
simulated devices driven by agent.testing.PoweredDevice. Used by tests/e2e/test_power_cuts.py
and bench/torture.py."""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.daemon import build_agent
from agent.server_api import ServerApi
from agent.testing import Image, PoweredDevice, boot_problems, report_problems, torn_files
from hardware.sim import SimDevice
from lab.processes import live_server
from server.settings import Settings
from signing.keys import init_keys
from signing.notify import notify_server
from signing.repo import publish_release
from wire import UpdateState

MODEL = "board"
ADMIN = "admin-token"
ENROLL = "enroll-token"
KIB = 1024
IMAGE_SIZE = 256 * KIB
CHUNK_SIZE = 64 * KIB
SLOT_SIZE = 320 * KIB


@dataclass
class Lab:
    tmp: Path
    server_url: str
    good: list[Image] = field(default_factory=lambda: [Image.of(bytes(SLOT_SIZE))])  # factory

    @property
    def repo(self) -> Path:
        return self.tmp / "repo"

    def publish(self, version: str) -> None:
        """Sign and publish a release of a fresh random image; the server hears of it."""
        data = random.Random(version).randbytes(IMAGE_SIZE)
        image = self.tmp / f"rom-{version}.img"
        image.write_bytes(data)
        release = publish_release(
            self.repo, image, version=version, channel="stable", model=MODEL, chunk_size=CHUNK_SIZE
        )
        notify_server(self.server_url, ADMIN, release)
        self.good.append(Image.of(data))

    def new_device(self, device_id: str, *, health_failing: bool = False) -> PoweredDevice:
        """A provisioned, enrolled board that booted once and reported itself idle."""
        root = self.tmp / device_id
        SimDevice.provision(
            root / "hw", slot_size=SLOT_SIZE, model=MODEL
        ).health_failing = health_failing
        credential = ServerApi(self.server_url, device_id).enroll(ENROLL, MODEL, "stable")
        config = AgentConfig(
            device_id=device_id,
            model=MODEL,
            channel="stable",
            server_url=self.server_url,
            credential=credential,
            data_dir=root / "agent",
            trusted_root=self.repo / "root.json",
            health_deadline_s=2.0,
            health_retry_s=0.0,
        )
        device = PoweredDevice(root / "hw", config.data_dir, lambda s: build_agent(config, s))
        device.boot_and_resume()
        return device

    def api(self, path: str) -> Any:
        request = urllib.request.Request(
            self.server_url + path, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def reports(self, device_id: str) -> list[dict[str, Any]]:
        return list(self.api(f"/api/v1/reports?device_id={device_id}&limit=10000"))

    def device_row(self, device_id: str) -> dict[str, Any]:
        rows = {d["device_id"]: d for d in self.api("/api/v1/devices")}
        return dict(rows[device_id])

    def problems(self, device: PoweredDevice, *, corrupt_expected: bool = False) -> list[str]:
        """Everything that must hold of a device at rest (empty when it all does)."""
        agent = device.agent
        assert agent is not None, "settle() the device first"
        device_id = agent.p.device_id
        found = torn_files(device, corrupt_expected=corrupt_expected)
        found += boot_problems(device, self.good)
        status = agent.p.boot.status()
        if status.trial or status.pending_trial is not None:
            found.append(f"at rest but the bootloader still has a trial: {status}")
        final = agent.record.state
        found += report_problems(device.ledger, self.reports(device_id), final)
        row = self.device_row(device_id)
        if row["state"] != final.value:
            found.append(f"server shows {row['state']}, the device rests in {final.value}")
        return found


@contextmanager
def lab(tmp: Path) -> Iterator[Lab]:
    init_keys(tmp / "repo")
    settings = Settings(
        db_url=f"sqlite:///{tmp / 'server.db'}",
        repo_dir=tmp / "repo" / "repository",
        admin_token=ADMIN,
        enrollment_token=ENROLL,
    )
    with live_server(settings) as url:
        yield Lab(tmp, url)


def outcome(device: PoweredDevice) -> UpdateState | None:
    """Where the device's agent rests; None while the device is off (it never came back)."""
    return None if device.agent is None else device.agent.record.state
