"""The Raspberry Pi tryboot backend against a fake firmware and a fake `reboot "0 tryboot"`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hardware.bootcontrol import BootControl, BootControlError, Slot
from hardware.fakes import tryboot_firmware as fake_pi
from hardware.registry import open_boot_control
from hardware.testing import assert_refuses_unsafe_requests, install_into_other_slot
from hardware.tryboot import TrybootControl, parse_autoboot, render_autoboot, with_partitions


@pytest.fixture
def board(tmp_path: Path) -> dict[str, Any]:
    return fake_pi.provision(tmp_path / "pi", slot_size=32 * 1024)


@pytest.fixture
def pi(board: dict[str, Any]) -> TrybootControl:
    boot = open_boot_control("tryboot", board)
    assert isinstance(boot, TrybootControl)
    return boot


def autoboot(board: dict[str, Any]) -> dict[str, dict[str, str]]:
    return parse_autoboot(Path(board["autoboot_path"]).read_text())


def power_cycle(board: dict[str, Any]) -> None:
    """A power cut or watchdog reset: the volatile tryboot flag is gone."""
    dt_dir = Path(board["partition_path"]).parent
    fake_pi.power_on(Path(board["autoboot_path"]), dt_dir, tryboot=False)


def test_fresh_pi_runs_partition_2(pi: TrybootControl, board: dict[str, Any]) -> None:
    assert isinstance(pi, BootControl)
    status = pi.status()
    assert (status.active, status.committed, status.trial, status.pending_trial) == (
        Slot.A,
        Slot.A,
        False,
        None,
    )
    assert autoboot(board)["all"] == {"tryboot_a_b": "1", "boot_partition": "2"}


def test_trial_is_one_tryboot_then_commit(pi: TrybootControl, board: dict[str, Any]) -> None:
    install_into_other_slot(pi, b"new")
    assert autoboot(board)["tryboot"]["boot_partition"] == "3"
    assert pi.status().pending_trial is Slot.B
    assert pi.status().attempts_left == 1
    pi.reboot()
    assert Path(board["partition_path"]).parent.joinpath("tryboot").read_bytes() == b"\0\0\0\1"
    status = pi.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.A, True)
    pi.mark_good()
    assert autoboot(board)["all"]["boot_partition"] == "3"
    assert autoboot(board)["tryboot"]["boot_partition"] == "3"
    power_cycle(board)
    status = pi.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.B, False)


def test_a_trial_that_dies_boots_the_committed_slot(
    pi: TrybootControl, board: dict[str, Any]
) -> None:
    install_into_other_slot(pi, b"new")
    pi.reboot()
    assert pi.status().active is Slot.B
    power_cycle(board)  # the trial kernel hung; the watchdog reset the board
    assert pi.status().active is Slot.A
    assert pi.status().committed is Slot.A


def test_power_cut_before_the_reboot_keeps_the_trial_armed(
    pi: TrybootControl, board: dict[str, Any]
) -> None:
    install_into_other_slot(pi, b"new")
    for _ in range(3):
        power_cycle(board)  # brown-outs boot normally: the flag was never set
    assert pi.status().active is Slot.A
    assert pi.status().pending_trial is Slot.B
    pi.reboot()  # the agent asks again
    assert pi.status().active is Slot.B


def test_rollback_after_failed_health_check(pi: TrybootControl, board: dict[str, Any]) -> None:
    install_into_other_slot(pi, b"new")
    pi.reboot()
    pi.mark_unbootable(Slot.B)
    assert pi.status().trial is True
    with pytest.raises(BootControlError, match="unbootable"):
        pi.mark_good()
    pi.reboot()
    status = pi.status()
    assert (status.active, status.committed, status.pending_trial) == (Slot.A, Slot.A, None)


def test_refusals(pi: TrybootControl) -> None:
    assert_refuses_unsafe_requests(pi)


def test_other_autoboot_settings_survive_rewrites(
    pi: TrybootControl, board: dict[str, Any]
) -> None:
    path = Path(board["autoboot_path"])
    path.write_text("[all]\ntryboot_a_b=1\nboot_partition=2\n\n[cm4]\nboot_delay=1\n")
    pi.set_trial(Slot.B)
    assert autoboot(board)["cm4"] == {"boot_delay": "1"}


def test_broken_config_is_a_boot_control_error(pi: TrybootControl, board: dict[str, Any]) -> None:
    path = Path(board["autoboot_path"])
    path.write_text("[all]\nboot_partition=2\n")
    with pytest.raises(BootControlError, match="tryboot_a_b"):
        pi.status()
    path.write_text("[all]\ntryboot_a_b=1\nboot_partition=9\n")
    with pytest.raises(BootControlError, match="neither slot"):
        pi.status()
    path.write_text("[all]\ntryboot_a_b=1\nboot_partition=2\n")
    Path(board["partition_path"]).write_bytes(b"\1")
    with pytest.raises(BootControlError, match="32-bit"):
        pi.status()


def test_autoboot_round_trip() -> None:
    sections = with_partitions({"all": {"foo": "1"}}, 3, 2)
    assert parse_autoboot(render_autoboot(sections)) == {
        "all": {"foo": "1", "tryboot_a_b": "1", "boot_partition": "3"},
        "tryboot": {"boot_partition": "2"},
    }


def test_fake_firmware_follows_the_documented_autoboot_rules(tmp_path: Path) -> None:
    """The fake reads autoboot.txt its own way, from Raspberry Pi's documentation."""
    documented = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
    assert fake_pi.autoboot_properties(documented, tryboot=False)["boot_partition"] == "2"
    assert fake_pi.autoboot_properties(documented, tryboot=True)["boot_partition"] == "3"
    filtered = "[none]\nboot_partition=3\n[all]\n[pi5]\nboot_partition=4\n"
    assert fake_pi.autoboot_properties(filtered, tryboot=False) == {}
    assert fake_pi.parse_reboot_param("0 tryboot") == (0, True)
    assert fake_pi.parse_reboot_param("3") == (3, False)
    oversized = tmp_path / "autoboot.txt"
    oversized.write_text(documented + "#" * 512)
    with pytest.raises(ValueError, match="512"):
        fake_pi.power_on(oversized, tmp_path / "dt", tryboot=False)
