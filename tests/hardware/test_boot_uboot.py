"""The U-Boot backend against fake fw_printenv/fw_setenv and a fake U-Boot (Mender's rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hardware.bootcontrol import BootControl, BootControlError, Slot
from hardware.fakes import install_tool, path_with
from hardware.fakes import uboot_tools as fake_uboot
from hardware.registry import open_boot_control
from hardware.testing import assert_refuses_unsafe_requests, install_into_other_slot
from hardware.uboot import UBootControl

FAKES = "hardware.fakes.uboot_tools"


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    bin_dir = tmp_path / "bin"
    for tool in ("fw_printenv", "fw_setenv"):
        install_tool(bin_dir, tool, FAKES)
    monkeypatch.setenv("PATH", path_with(bin_dir))
    return fake_uboot.provision(tmp_path / "board", slot_size=64 * 1024, bootlimit=2)


@pytest.fixture
def uboot(board: dict[str, Any]) -> UBootControl:
    boot = open_boot_control("uboot", board)
    assert isinstance(boot, UBootControl)
    return boot


def env_of(board: dict[str, Any]) -> dict[str, str]:
    return fake_uboot.read_env(fake_uboot.env_file_of(Path(board["fw_env_config"])))


def power_cycle(board: dict[str, Any]) -> None:
    """The power went: U-Boot runs again without anyone asking."""
    config = Path(board["fw_env_config"])
    roots = {"2": board["slot_a_root"], "3": board["slot_b_root"]}
    fake_uboot.power_on(fake_uboot.env_file_of(config), Path(board["cmdline_path"]), roots)


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


def test_tool_failures_become_boot_control_errors(board: dict[str, Any], tmp_path: Path) -> None:
    broken = UBootControl.from_options({**board, "fw_env_config": str(tmp_path / "missing")})
    with pytest.raises(BootControlError, match="fw_printenv"):
        broken.status()
    garbage = fake_uboot.env_file_of(Path(board["fw_env_config"]))
    garbage.write_text("mender_boot_part=7\n")
    with pytest.raises(BootControlError, match="neither slot"):
        UBootControl.from_options(board).status()


def test_missing_tool_is_named(board: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BootControlError, match="not found: fw_printenv"):
        UBootControl.from_options(board).status()


def test_fake_fw_tools_behave_like_libubootenv(
    board: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = board["fw_env_config"]
    assert fake_uboot.main(["fw_setenv", "-c", config, "foo", "bar", "baz"]) == 0
    assert fake_uboot.main(["fw_printenv", "-c", config, "-n", "foo"]) == 0
    assert capsys.readouterr().out == "bar baz\n"
    assert fake_uboot.main(["fw_setenv", "-c", config, "foo"]) == 0
    assert fake_uboot.main(["fw_printenv", "-c", config, "foo"]) == 1
    assert "not defined" in capsys.readouterr().err
