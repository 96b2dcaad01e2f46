"""The real agent against the real server (loopback HTTP, SQLite) on every boot backend:
the simulated device; U-Boot through Debian's real fw_setenv on a redundant file-backed
environment; GRUB through the real grub-editenv; the Raspberry Pi tryboot firmware and
Android's bootctl/update_engine_client as fakes written from their documentation. Each
backend installs, tries and commits a release; rolls back on a failing health check; and
comes back from a power cut in the middle of the install on its good slot, then finishes."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_tools

import durable
from agent.config import AgentConfig
from agent.daemon import build_agent
from agent.runner import Agent
from agent.testing import MidDownload
from hardware.bootcontrol import Slot
from hardware.sim import PowerCut
from lab.boards import BOARD_KINDS, TOOLS, LabBoard, factory_image, provision_board
from lab.fleet import KIB, Backend, Board, running_backend
from lab.pagecache import CachedDisk
from signing.repo import publish_release, target_storage_name
from signing.testing import write_image
from wire import FailureReason, UpdateState

SLOT_SIZE = 512 * KIB
INSTALL = ["idle", "downloading", "installed", "rebooting", "trial", "committed"]


@dataclass
class Device:
    backend: Backend
    board: LabBoard
    config: AgentConfig
    unhealthy_flag: Path  # while it exists, the health check fails

    def agent(self) -> Agent:
        """A new agent process on the board (the config names the backend), resumed."""
        agent = build_agent(self.config)
        agent.resume()
        return agent


@pytest.fixture(params=BOARD_KINDS)
def device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Device]:
    with lab_device(request.param, tmp_path) as made:
        yield made


@contextlib.contextmanager
def lab_device(kind: str, tmp_path: Path) -> Iterator[Device]:
    """An enrolled device of `kind` on a lab server of its own."""
    require_tools(*TOOLS.get(kind, ()))
    board_spec = Board(
        model="board", slot_size=SLOT_SIZE, image_size=200 * KIB + 17, chunk_size=32 * KIB
    )
    if kind == "android":
        board_spec = Board(**{**board_spec.__dict__, "android": True})
    with running_backend(tmp_path / "lab", board_spec) as backend:
        board = provision_board(kind, tmp_path / f"{kind}-board", SLOT_SIZE)
        flag = tmp_path / "unhealthy"
        config = backend.agent_config(
            f"dev-{kind}",
            slot_backend=kind,
            slot_options=board.options,
            health_checks=[
                {"type": "command", "name": "flag", "argv": ["test", "!", "-e", str(flag)]}
            ],
            health_deadline_s=2.0,
            health_retry_s=0.0,
        )
        yield Device(backend, board, config, flag)


def new_slot_holds(device: Device, slot: Slot, version: str) -> bool:
    """Slot `slot` holds the build of `version` (for Android: the payload inside it)."""
    build = device.backend.build(version).read_bytes()
    if device.board.kind == "android":  # update_engine wrote the payload inside the package
        with zipfile.ZipFile(device.backend.build(version)) as package:
            build = package.read("payload.bin")
    held = device.board.slot_bytes(slot)[: len(build)]
    return hashlib.sha256(held).digest() == hashlib.sha256(build).digest()


def factory_untouched(device: Device) -> bool:
    expected = factory_image(device.board.root.name)
    return device.board.slot_bytes(Slot.A)[: len(expected)] == expected


def assert_on_the_good_slot(device: Device) -> None:
    """Slot A runs, committed, nothing armed, its factory image as it was."""
    status = device.board.boot_control().status()
    assert (status.active, status.committed, status.trial, status.pending_trial) == (
        Slot.A,
        Slot.A,
        False,
        None,
    )
    assert factory_untouched(device)


def test_install_trial_commit(device: Device) -> None:
    agent = device.agent()
    device.backend.publish("1.0")
    agent.poll_once()
    assert agent.record.state is UpdateState.COMMITTED, agent.record
    boot = device.board.boot_control()
    status = boot.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.B, False)
    assert new_slot_holds(device, Slot.B, "1.0")
    assert factory_untouched(device)
    row = device.backend.device_row(device.config.device_id)
    assert (row.current_version, row.state, row.slot) == ("1.0", "committed", "b")
    assert device.backend.reported_states(device.config.device_id) == INSTALL
    for _ in range(2):  # committed means kept: later boots stay on it
        device.board.power_on()
        assert boot.status().active is Slot.B
    again = device.agent()
    assert again.record.state is UpdateState.COMMITTED
    assert again.current_version == "1.0"


def test_failing_health_check_rolls_back(device: Device) -> None:
    agent = device.agent()
    device.unhealthy_flag.touch()
    device.backend.publish("1.0")
    agent.poll_once()
    assert agent.record.state is UpdateState.ROLLED_BACK, agent.record
    assert agent.record.reason is FailureReason.HEALTH_CHECK
    assert_on_the_good_slot(device)
    report = max(device.backend.reports(device.config.device_id), key=lambda r: r.seq)
    assert (report.state, report.reason) == ("rolled_back", "health_check")
    assert report.detail["failed_check"] == "flag"
    states = device.backend.reported_states(device.config.device_id)
    assert states[-3:] == ["trial", "rolling_back", "rolled_back"]
    device.board.power_on()  # and the bootloader keeps it that way
    assert device.board.boot_control().status().active is Slot.A
    agent.poll_once()  # the build that failed here is not tried again
    assert agent.record.state is UpdateState.ROLLED_BACK


def power_cut() -> None:
    raise PowerCut("mid-download", 0)


def test_power_cut_mid_install_boots_the_good_slot_and_recovers(device: Device) -> None:
    disk = CachedDisk()  # the agent's files lose what was not synced when the power goes
    device.config.data_dir.mkdir(parents=True, exist_ok=True)
    disk.watch(device.config.data_dir)
    with durable.using_disk(disk):
        agent = device.agent()
        device.backend.publish("1.0")
        agent.parts.fetcher = MidDownload(agent.parts.fetcher, power_cut)
        with pytest.raises(PowerCut):
            agent.poll_once()
        disk.cut(device.config.data_dir)
        device.board.power_on()
        assert_on_the_good_slot(device)
        after = device.agent()  # resumes the interrupted download
        after.poll_once()
    assert after.record.state is UpdateState.COMMITTED, after.record
    assert after.current_version == "1.0"
    assert new_slot_holds(device, Slot.B, "1.0")
    status = device.board.boot_control().status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.B, False)
    row = device.backend.device_row(device.config.device_id)
    assert (row.current_version, row.state) == ("1.0", "committed")
    states = device.backend.reported_states(device.config.device_id)
    assert states[:2] == ["idle", "downloading"]
    assert states[-4:] == INSTALL[-4:]


# --------------------------------------------------------------------------- Android only


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Device]:
    with lab_device("android", tmp_path) as made:
        yield made


def test_update_engine_never_sees_bytes_tuf_did_not_verify(
    phone: Device, caplog: pytest.LogCaptureFixture
) -> None:
    agent = phone.agent()
    release = phone.backend.publish("1.0")
    stored = (
        phone.backend.repo / "repository" / target_storage_name(release.target_path, release.sha256)
    )
    data = bytearray(stored.read_bytes())
    data[-200] ^= 0xFF  # in the zip's tail, past the last chunk hash that still matches
    stored.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="agent.runner"):
        agent.poll_once()
    assert (agent.record.state, agent.record.reason) == (
        UpdateState.FAILED,
        FailureReason.HASH_MISMATCH,
    )
    assert "update_engine" not in caplog.text  # it was never asked
    assert phone.board.slot_bytes(Slot.B) == b""  # nothing was written to the other slot
    assert not Path(phone.board.options["payload_path"]).exists()  # nor kept
    assert_on_the_good_slot(phone)


def test_a_build_that_is_no_ota_package_is_refused(phone: Device) -> None:
    agent = phone.agent()
    image = write_image(phone.backend.workdir / "raw.img", 100 * KIB)
    release = publish_release(
        phone.backend.repo, image, version="1.0", channel="stable", model="board"
    )
    phone.backend.register(release)
    agent.poll_once()
    assert (agent.record.state, agent.record.reason) == (
        UpdateState.FAILED,
        FailureReason.WRONG_MODEL,
    )
    assert "not an Android OTA package" in agent.record.detail["error"]
    assert phone.board.slot_bytes(Slot.B) == b""
    assert_on_the_good_slot(phone)


def test_progress_of_update_engine_is_logged(
    phone: Device, caplog: pytest.LogCaptureFixture
) -> None:
    agent = phone.agent()
    phone.backend.publish("1.0")
    with caplog.at_level(logging.INFO, logger="agent.runner"):
        agent.poll_once()
    assert agent.record.state is UpdateState.COMMITTED
    assert "update_engine: UPDATE_STATUS_DOWNLOADING" in caplog.text
    assert "update_engine: UPDATE_STATUS_FINALIZING 100%" in caplog.text
