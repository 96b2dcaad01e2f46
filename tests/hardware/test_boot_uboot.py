"""The U-Boot backend against Debian's real fw_printenv/fw_setenv (libubootenv-tool), on a
file-backed environment, one copy or two with flags; the bootloader is the stand-in of
hardware/fakes/uboot_bootloader.py (the real U-Boot runs in test_uboot_bootloader.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tools

from hardware.bootcontrol import BootControl, BootControlError, Slot
from hardware.fakes import uboot_bootloader as board_env
from hardware.registry import open_boot_control
from hardware.testing import assert_refuses_unsafe_requests, install_into_other_slot
from hardware.uboot import UBootControl


@pytest.fixture(params=["single", "redundant"])
def board(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    require_tools(*board_env.TOOLS)
    redundant = request.param == "redundant"
    return board_env.provision(
        tmp_path / "board", slot_size=64 * 1024, bootlimit=2, redundant=redundant
    )


@pytest.fixture
def uboot(board: dict[str, Any]) -> UBootControl:
    boot = open_boot_control("uboot", board)
    assert isinstance(boot, UBootControl)
    return boot


def config_of(board: dict[str, Any]) -> Path:
    return Path(board["fw_env_config"])


def env_of(board: dict[str, Any]) -> dict[str, str]:
    return board_env.read_env(config_of(board))


def power_cycle(board: dict[str, Any]) -> None:
    """The power went: U-Boot runs again without anyone asking."""
    roots = {"2": board["slot_a_root"], "3": board["slot_b_root"]}
    board_env.power_on(config_of(board), Path(board["cmdline_path"]), roots)


def fw_setenv(board: dict[str, Any], *args: str, script: str | None = None) -> None:
    argv = ["fw_setenv", "-c", str(config_of(board)), *args]
    subprocess.run(argv, input=script, text=True, check=True, capture_output=True)


def test_fresh_board_runs_committed_slot_a(uboot: UBootControl) -> None:
    assert isinstance(uboot, BootControl)
    status = uboot.status()
    assert (status.active, status.committed, status.trial, status.pending_trial) == (
        Slot.A,
        Slot.A,
        False,
        None,
    )
    assert uboot.slot_size(Slot.B) == 64 * 1024


def test_trial_sets_mender_variables_in_one_write(
    uboot: UBootControl, board: dict[str, Any]
) -> None:
    install_into_other_slot(uboot, b"rootfs b")
    env = env_of(board)
    assert (env["mender_boot_part"], env["mender_boot_part_hex"]) == ("3", "3")
    assert (env["upgrade_available"], env["bootcount"]) == ("1", "0")
    status = uboot.status()
    assert (status.active, status.pending_trial, status.attempts_left) == (Slot.A, Slot.B, 2)
    assert Path(board["slot_b_device"]).read_bytes()[:8] == b"rootfs b"


def test_update_is_committed_by_mark_good(uboot: UBootControl, board: dict[str, Any]) -> None:
    install_into_other_slot(uboot, b"new")
    uboot.reboot()
    status = uboot.status()
    assert (status.active, status.committed, status.trial, status.attempts_left) == (
        Slot.B,
        Slot.A,
        True,
        1,
    )
    uboot.mark_good()
    assert (env_of(board)["upgrade_available"], env_of(board)["bootcount"]) == ("0", "0")
    for _ in range(3):
        power_cycle(board)
    status = uboot.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.B, False)


def test_unconfirmed_trial_falls_back_after_bootlimit(
    uboot: UBootControl, board: dict[str, Any]
) -> None:
    install_into_other_slot(uboot, b"new")
    booted = []
    for _ in range(4):
        power_cycle(board)
        booted.append(uboot.status().active)
    assert booted == [Slot.B, Slot.B, Slot.A, Slot.A]
    assert env_of(board)["upgrade_available"] == "0"
    assert uboot.status().committed is Slot.A


def test_brownouts_without_a_trial_never_count(uboot: UBootControl, board: dict[str, Any]) -> None:
    for _ in range(5):
        power_cycle(board)
    assert uboot.status().active is Slot.A
    assert env_of(board)["bootcount"] == "0"


def test_marking_the_running_trial_bad_rolls_back_on_reboot(uboot: UBootControl) -> None:
    install_into_other_slot(uboot, b"bad build")
    uboot.reboot()
    uboot.mark_unbootable(Slot.B)
    status = uboot.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.A, True)
    with pytest.raises(BootControlError, match="unbootable"):
        uboot.mark_good()
    uboot.reboot()
    assert uboot.status().active is Slot.A


def test_marking_a_pending_trial_bad_cancels_it(uboot: UBootControl) -> None:
    install_into_other_slot(uboot, b"x")
    uboot.mark_unbootable(Slot.B)
    assert uboot.status().pending_trial is None
    uboot.reboot()
    assert uboot.status().active is Slot.A


def test_refusals(uboot: UBootControl) -> None:
    assert_refuses_unsafe_requests(uboot)


def test_counters_are_read_as_uboot_writes_them(uboot: UBootControl, board: dict[str, Any]) -> None:
    """setexpr writes hex: bootcount 0xa is ten boots, bootlimit 10 is sixteen."""
    uboot.set_trial(Slot.B)
    fw_setenv(board, "-s", "-", script="bootcount=a\nbootlimit=10\n")
    assert uboot.status().attempts_left == 6


def test_tool_failures_become_boot_control_errors(board: dict[str, Any], tmp_path: Path) -> None:
    broken = UBootControl.from_options({**board, "fw_env_config": str(tmp_path / "missing")})
    with pytest.raises(BootControlError, match="fw_printenv"):
        broken.status()
    fw_setenv(board, "mender_boot_part", "7")
    with pytest.raises(BootControlError, match="neither slot"):
        UBootControl.from_options(board).status()


def test_a_write_the_tool_skipped_is_an_error(board: dict[str, Any]) -> None:
    """fw_setenv exits 0 on a script line it cannot use: the backend reads back and says so."""
    misnamed = UBootControl.from_options({**board, "boot_part_hex_var": "part=hex"})
    with pytest.raises(BootControlError, match="did not store part=hex"):
        misnamed.set_trial(Slot.B)


def test_missing_tool_is_named(board: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BootControlError, match="not found: fw_printenv"):
        UBootControl.from_options(board).status()


def test_real_fw_setenv_behaviour_the_backend_relies_on(board: dict[str, Any]) -> None:
    """libubootenv 0.3.2, as Debian ships it: what the fake we had got wrong."""
    fw_setenv(board, "-s", "-", script="upgrade_available 1\nfoo=bar baz\n")
    env = env_of(board)
    assert env["upgrade_available"] == "0"  # `name value` script lines are skipped
    assert env["foo"] == "bar baz"
    fw_setenv(board, "one", "1", "two")  # name/value pairs; a lone last name is deleted
    assert env_of(board)["one"] == "1"
    out = subprocess.run(
        ["fw_printenv", "-c", str(config_of(board)), "nosuch"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "nosuch=\n"  # a missing variable is not an error


def test_torn_write_keeps_the_old_environment_if_there_is_a_second_copy(
    uboot: UBootControl, board: dict[str, Any]
) -> None:
    """A power cut halfway through fw_setenv: the copy being written fails its CRC. With two
    copies fw_printenv and the bootloader read the other one, the state before the request;
    with one there is nothing left to read (docs/agent.md: use two)."""
    before = board_env.snapshot(config_of(board))
    uboot.set_trial(Slot.B)
    assert board_env.tear_writes(before)
    if len(before) == 1:
        with pytest.raises(BootControlError, match="fw_printenv"):
            uboot.status()
        return
    assert uboot.status().pending_trial is None
    power_cycle(board)
    assert uboot.status().active is Slot.A
    uboot.set_trial(Slot.B)  # the agent asks again and the request now lands
    power_cycle(board)
    assert uboot.status().active is Slot.B
