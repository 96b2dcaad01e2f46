"""Our A/B boot script in a real U-Boot (Debian's u-boot-qemu under qemu-system-aarch64),
driven as the agent drives a board: the U-Boot backend arms, marks good and marks bad with
the real fw_setenv, `reboot()` powers the emulated board on, and the slot U-Boot chose is read
from its serial console. One boot is about three seconds: the first test runs in `make test`,
the rest carry the `bootloader` marker (`pytest -m bootloader`, which CI runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import require_tools

from hardware import uboot_qemu
from hardware.bootcontrol import Slot
from hardware.fakes import uboot_bootloader as board_env
from hardware.registry import open_boot_control
from hardware.testing import install_into_other_slot
from hardware.uboot import UBootControl


def provision(root: Path, *, bootlimit: int = 1, redundant: bool = True) -> dict[str, Any]:
    require_tools(*uboot_qemu.TOOLS)
    if not uboot_qemu.UBOOT_BIN.exists():
        require_tools(str(uboot_qemu.UBOOT_BIN))
    return uboot_qemu.provision(root, bootlimit=bootlimit, redundant=redundant)


def control(board: dict[str, Any]) -> UBootControl:
    boot = open_boot_control("uboot", board)
    assert isinstance(boot, UBootControl)
    return boot


def booted(uboot: UBootControl) -> tuple[Slot, Slot, bool]:
    status = uboot.status()
    return status.active, status.committed, status.trial


def env_of(board: dict[str, Any]) -> dict[str, str]:
    return board_env.read_env(Path(board["fw_env_config"]))


def test_trial_boots_the_new_slot_and_mark_good_makes_it_stick(tmp_path: Path) -> None:
    board = provision(tmp_path, bootlimit=2)
    uboot = control(board)
    install_into_other_slot(uboot, b"rootfs b")
    uboot.reboot()  # U-Boot runs uboot-ab.cmd: the trial's first boot
    assert booted(uboot) == (Slot.B, Slot.A, True)
    assert env_of(board)["bootcount"] == "1"  # counted by U-Boot, read by the real fw_printenv
    assert uboot.status().attempts_left == 1
    uboot.mark_good()
    uboot.reboot()
    assert booted(uboot) == (Slot.B, Slot.B, False)
    assert env_of(board)["bootcount"] == "0"


@pytest.mark.bootloader
@pytest.mark.parametrize("redundant", [False, True], ids=["single", "redundant"])
def test_failed_boots_past_the_limit_fall_back_by_the_bootloader_alone(
    tmp_path: Path, redundant: bool
) -> None:
    board = provision(tmp_path, bootlimit=1, redundant=redundant)
    uboot = control(board)
    install_into_other_slot(uboot, b"kernel that never comes up")
    slots = []
    for _ in range(3):  # nobody marks good: every boot of B dies before the health check
        uboot.reboot()
        slots.append(uboot.status().active)
    assert slots == [Slot.B, Slot.A, Slot.A]
    assert booted(uboot) == (Slot.A, Slot.A, False)
    assert env_of(board)["upgrade_available"] == "0"


@pytest.mark.bootloader
def test_a_rolled_back_trial_boots_the_committed_slot(tmp_path: Path) -> None:
    uboot = control(provision(tmp_path, bootlimit=3))
    install_into_other_slot(uboot, b"bad build")
    uboot.reboot()
    assert booted(uboot) == (Slot.B, Slot.A, True)
    uboot.mark_unbootable(Slot.B)  # the health check failed
    uboot.reboot()
    assert booted(uboot) == (Slot.A, Slot.A, False)


@pytest.mark.bootloader
def test_torn_arming_still_boots_the_committed_slot_then_the_retry_lands(tmp_path: Path) -> None:
    board = provision(tmp_path, bootlimit=2, redundant=True)
    uboot = control(board)
    before = board_env.snapshot(Path(board["fw_env_config"]))
    install_into_other_slot(uboot, b"rootfs b")
    assert board_env.tear_writes(before)  # the power went while fw_setenv wrote
    uboot.reboot()
    assert booted(uboot) == (Slot.A, Slot.A, False)
    uboot.set_trial(Slot.B)  # the agent, back up, arms again
    uboot.reboot()
    assert booted(uboot) == (Slot.B, Slot.A, True)


@pytest.mark.bootloader
def test_torn_mark_good_keeps_the_trial_running(tmp_path: Path) -> None:
    board = provision(tmp_path, bootlimit=3, redundant=True)
    uboot = control(board)
    install_into_other_slot(uboot, b"rootfs b")
    uboot.reboot()
    before = board_env.snapshot(Path(board["fw_env_config"]))
    uboot.mark_good()
    assert board_env.tear_writes(before)
    uboot.reboot()  # still the trial, one more boot counted, and still slot B
    assert booted(uboot) == (Slot.B, Slot.A, True)
    assert env_of(board)["bootcount"] == "2"
