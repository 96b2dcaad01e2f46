"""A lab for power-cut runs: the real server (SQLite), a signed repository (lab.fleet), and
simulated devices driven by agent.testing.PoweredDevice, on a disk with a page cache
(lab.pagecache.CachedDisk: a power cut loses what was not synced). Used by
tests/e2e/test_power_cuts.py and bench/torture.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import durable
from agent.daemon import build_agent
from agent.testing import Image, PoweredDevice, boot_problems, report_problems, torn_files
from lab.fleet import KIB, Backend, Board, running_backend
from lab.pagecache import CachedDisk
from server.api_models import Device
from wire import UpdateState

BOARD = Board(model="board", slot_size=320 * KIB, image_size=256 * KIB, chunk_size=64 * KIB)


@dataclass
class Lab:
    backend: Backend
    disk: CachedDisk  # every device's files: a power cut loses what was not synced
    # the factory image every board starts with, then each published build
    good: list[Image] = field(default_factory=lambda: [Image.of(bytes(BOARD.slot_size))])

    def publish(self, version: str) -> None:
        """Sign and publish a release of a fresh image; the server hears of it."""
        self.backend.publish(version)
        self.good.append(Image.of(self.backend.build(version).read_bytes()))

    def new_device(self, device_id: str, *, health_failing: bool = False) -> PoweredDevice:
        """A provisioned, enrolled board that booted once and reported itself idle."""
        self.backend.provision(device_id).health_failing = health_failing
        config = self.backend.agent_config(device_id, health_deadline_s=2.0, health_retry_s=0.0)
        hw = self.backend.device_dir(device_id) / "hw"
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.disk.watch(hw, config.data_dir)
        device = PoweredDevice(
            hw,
            config.data_dir,
            lambda s: build_agent(config, s),
            power_loss=partial(self.disk.cut, hw, config.data_dir),
        )
        device.boot_and_resume()
        return device

    def reports(self, device_id: str) -> list[dict[str, Any]]:
        """The server's reports of `device_id` as JSON, as the agent's report audit reads them."""
        return [r.model_dump(mode="json") for r in self.backend.reports(device_id)]

    def device_row(self, device_id: str) -> Device:
        return self.backend.device_row(device_id)

    def problems(self, device: PoweredDevice, *, corrupt_expected: bool = False) -> list[str]:
        """Everything that must hold of a device at rest (empty when it all does)."""
        agent = device.agent
        assert agent is not None, "settle() the device first"
        device_id = agent.parts.device_id
        found = torn_files(device, corrupt_expected=corrupt_expected)
        found += boot_problems(device, self.good)
        status = agent.parts.boot.status()
        if status.trial or status.pending_trial is not None:
            found.append(f"at rest but the bootloader still has a trial: {status}")
        final = agent.record.state
        found += report_problems(device.ledger, self.reports(device_id), final)
        row = self.device_row(device_id)
        if row.state != final.value:
            found.append(f"server shows {row.state}, the device rests in {final.value}")
        return found


@contextmanager
def lab(tmp: Path) -> Iterator[Lab]:
    disk = CachedDisk()
    with running_backend(tmp, BOARD) as backend, durable.using_disk(disk):
        yield Lab(backend, disk)


def outcome(device: PoweredDevice) -> UpdateState | None:
    """Where the device's agent rests; None while the device is off (it never came back)."""
    return None if device.agent is None else device.agent.record.state
