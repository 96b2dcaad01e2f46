"""The simulated device through the BootControl interface: the agent's install order works,
refusals are clear, and a power cut at any durable step leaves a device that boots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hardware.bootcontrol import BootControl, BootControlError, PayloadApplier, Slot
from hardware.sim import FaultPlan, PowerCut, SimDevice
from hardware.sim_env import arm_trial, mark_slot_bad
from hardware.testing import assert_refuses_unsafe_requests, install_into_other_slot

SLOT_SIZE = 256 * 1024


@pytest.fixture
def device(tmp_path: Path) -> SimDevice:
    return SimDevice.provision(tmp_path / "hw", slot_size=SLOT_SIZE, max_attempts=3, model="m1")


def install(device: SimDevice, payload: bytes = b"new build" * 100) -> Slot:
    """The agent's order (mark bad, write, arm trial), then the reboot."""
    target = install_into_other_slot(device, payload)
    device.reboot()
    return target


def test_provisioned_device_runs_committed_slot_a(device: SimDevice) -> None:
    status = device.status()
    assert isinstance(device, BootControl)
    assert (status.active, status.committed, status.trial) == (Slot.A, Slot.A, False)
    assert status.pending_trial is None
    assert device.slot_size(Slot.A) == device.slot_size(Slot.B) == SLOT_SIZE
    assert device.slot_path(Slot.B).stat().st_blocks == 0  # sparse
    assert device.model == "m1"
    assert device.boots == 0


def test_provision_refuses_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="slot_size"):
        SimDevice.provision(tmp_path, slot_size=0)
    with pytest.raises(ValueError, match="max_attempts"):
        SimDevice.provision(tmp_path, max_attempts=0)


def test_opening_a_missing_device_is_a_boot_control_error(tmp_path: Path) -> None:
    with pytest.raises(BootControlError, match="no simulated device"):
        SimDevice(tmp_path)


def test_update_commits_after_mark_good(device: SimDevice) -> None:
    target = install(device, b"abc")
    status = device.status()
    assert (status.active, status.committed, status.trial) == (target, Slot.A, True)
    assert status.attempts_left == 2
    assert device.slot_path(target).read_bytes()[:3] == b"abc"
    device.mark_good()
    status = device.status()
    assert (status.active, status.committed, status.trial) == (target, target, False)
    device.reboot()
    assert device.status().active is target


def test_trial_without_mark_good_falls_back_after_max_attempts(device: SimDevice) -> None:
    target = install(device)
    booted = [device.status().active]
    for _ in range(4):
        booted.append(device.boot())
    assert booted == [target, target, target, Slot.A, Slot.A]
    assert device.status().trial is False
    assert device.status().committed is Slot.A


def test_failed_health_check_rolls_back_at_once(device: SimDevice) -> None:
    target = install(device)
    device.health_failing = True
    assert device.check_health() is not None
    device.mark_unbootable(target)  # the agent's mark-bad on the booted trial slot
    assert device.status().trial is True  # still running it until the reboot
    device.reboot()
    assert device.status().active is Slot.A
    device.health_failing = False
    assert device.check_health() is None


def test_health_switch_is_persisted(device: SimDevice) -> None:
    device.health_failing = True
    assert SimDevice(device.root).health_failing is True


def test_refusals(device: SimDevice) -> None:
    assert_refuses_unsafe_requests(device)


def test_open_slot_refusals(device: SimDevice) -> None:
    with pytest.raises(BootControlError, match="running"):
        device.open_slot(Slot.A)
    device.set_trial(Slot.B)
    with pytest.raises(BootControlError, match="unbootable"):
        device.open_slot(Slot.B)


def test_committed_slot_cannot_be_marked_unbootable(device: SimDevice) -> None:
    with pytest.raises(BootControlError, match="committed"):
        device.mark_unbootable(Slot.A)
    with pytest.raises(BootControlError, match="committed"):
        device.set_trial(Slot.A)


def test_slot_writes_stop_at_the_end_of_the_partition(device: SimDevice) -> None:
    device.mark_unbootable(Slot.B)
    with device.open_slot(Slot.B) as sink:
        sink.seek(SLOT_SIZE - 2)
        with pytest.raises(OSError, match="past the end"):
            sink.write(b"xyz")
        with pytest.raises(OSError, match="cannot be truncated"):
            sink.truncate(0)


def test_slot_file_reads_back_what_was_written(device: SimDevice) -> None:
    device.mark_unbootable(Slot.B)
    with device.open_slot(Slot.B) as sink:
        sink.write(b"hello")
        sink.seek(0)
        assert sink.read(5) == b"hello"
        assert sink.tell() == 5


def test_brownouts_without_a_trial_never_move_the_device(device: SimDevice) -> None:
    for _ in range(5):
        assert device.boot() is Slot.A
    assert device.boots == 5
    assert device.status().committed is Slot.A


def test_recording_plan_lists_every_durable_step(device: SimDevice) -> None:
    plan = FaultPlan.recording()
    install(SimDevice(device.root, faults=plan))
    env_steps = ["bootenv.write-temp", "bootenv.fsync-temp", "bootenv.replace", "bootenv.fsync-dir"]
    assert plan.steps[:4] == env_steps  # mark_unbootable
    assert plan.steps[4:6] == ["slot.write", "slot.flush"]
    assert plan.count_steps() == 4 + 2 + 4 + 4  # + set_trial + boot


def _cut_points(device: SimDevice, action: Callable[[SimDevice], None]) -> int:
    plan = FaultPlan.recording()
    action(SimDevice(device.root, faults=plan))
    return plan.count_steps()


def test_power_cut_at_every_env_step_leaves_old_or_new_env(tmp_path: Path) -> None:
    def arm(dev: SimDevice) -> None:
        dev.mark_unbootable(Slot.B)
        dev.set_trial(Slot.B)

    total = _cut_points(SimDevice.provision(tmp_path / "count", slot_size=SLOT_SIZE), arm)
    assert total == 8
    for cut_at in range(total):
        root = tmp_path / f"cut{cut_at}"
        before = SimDevice.provision(root, slot_size=SLOT_SIZE).read_env()
        marked = mark_slot_bad(before, Slot.B)
        possible = [before, marked, arm_trial(marked, Slot.B)]
        plan = FaultPlan(cut_at=cut_at)
        with pytest.raises(PowerCut):
            arm(SimDevice(root, faults=plan))
        json.loads((root / "bootenv.json").read_bytes())  # parseable, never torn
        after = SimDevice(root)
        assert after.read_env() in possible
        assert after.boot() in (Slot.A, Slot.B)
        assert after.status().committed is Slot.A
        assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # cleaned


def test_power_cut_during_slot_write_tears_the_chunk(device: SimDevice) -> None:
    device.mark_unbootable(Slot.B)
    plan = FaultPlan(cut_at=1)
    dying = SimDevice(device.root, faults=plan)

    def write_three_chunks() -> None:
        with dying.open_slot(Slot.B) as sink:
            for chunk in (b"A" * 8, b"B" * 8, b"C" * 8):  # C never lands: the power is off
                sink.write(chunk)

    with pytest.raises(PowerCut):
        write_three_chunks()
    assert device.slot_path(Slot.B).read_bytes()[:16] == b"A" * 8 + b"B" * 4 + b"\0" * 4
    assert SimDevice(device.root).boot() is Slot.A  # the torn slot is never booted


def test_dead_plan_keeps_raising(device: SimDevice) -> None:
    plan = FaultPlan(cut_at=0)
    dying = SimDevice(device.root, faults=plan)
    with pytest.raises(PowerCut):
        dying.mark_unbootable(Slot.B)
    with pytest.raises(PowerCut):
        dying.set_trial(Slot.B)
    assert plan.count_steps() == 1


def test_power_cut_anywhere_in_an_install_never_boots_a_partial_slot(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 64  # 16 KiB in 4 KiB chunks

    def install_in_chunks(dev: SimDevice) -> None:
        dev.mark_unbootable(Slot.B)
        with dev.open_slot(Slot.B) as sink:
            for start in range(0, len(payload), 4096):
                sink.write(payload[start : start + 4096])
            sink.flush()
        dev.set_trial(Slot.B)
        dev.reboot()

    total = _cut_points(
        SimDevice.provision(tmp_path / "count", slot_size=SLOT_SIZE), install_in_chunks
    )
    assert total == 4 + 4 + 1 + 4 + 4
    booted = set()
    for cut_at in range(total):
        root = tmp_path / f"cut{cut_at}"
        SimDevice.provision(root, slot_size=SLOT_SIZE)
        with pytest.raises(PowerCut):
            install_in_chunks(SimDevice(root, faults=FaultPlan(cut_at=cut_at)))
        after = SimDevice(root)
        slot = after.boot()
        booted.add(slot)
        if slot is Slot.B:
            assert after.slot_path(Slot.B).read_bytes()[: len(payload)] == payload
        assert after.status().committed is Slot.A
    assert booted == {Slot.A, Slot.B}  # cuts late enough in arming do boot the trial


def test_sim_writes_its_own_slots(device: SimDevice) -> None:
    assert not isinstance(device, PayloadApplier)
