"""The GRUB backend against Debian's real grub-editenv and a stand-in GRUB running the
boot-once recipe (hardware/fakes/grub_bootloader.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tools

from hardware.bootcontrol import BootControl, BootControlError, Slot
from hardware.fakes import grub_bootloader as fake_grub
from hardware.grub import GrubControl
from hardware.registry import open_boot_control
from hardware.testing import assert_refuses_unsafe_requests, install_into_other_slot


@pytest.fixture
def board(tmp_path: Path) -> dict[str, Any]:
    require_tools("grub-editenv")
    return fake_grub.provision(tmp_path / "pc", slot_size=32 * 1024)


@pytest.fixture
def grub(board: dict[str, Any]) -> GrubControl:
    boot = open_boot_control("grub", board)
    assert isinstance(boot, GrubControl)
    return boot


def grubenv(board: dict[str, Any]) -> dict[str, str]:
    return fake_grub.read_block(Path(board["grubenv"]))


def power_cycle(board: dict[str, Any]) -> None:
    roots = {"slot_a": board["slot_a_root"], "slot_b": board["slot_b_root"]}
    fake_grub.power_on(Path(board["grubenv"]), Path(board["cmdline_path"]), roots)


def test_fresh_pc_runs_slot_a(grub: GrubControl, board: dict[str, Any]) -> None:
    assert isinstance(grub, BootControl)
    status = grub.status()
    assert (status.active, status.committed, status.trial, status.pending_trial) == (
        Slot.A,
        Slot.A,
        False,
        None,
    )
    assert Path(board["grubenv"]).stat().st_size == 1024


def test_trial_boots_once_then_commits(grub: GrubControl, board: dict[str, Any]) -> None:
    install_into_other_slot(grub, b"kernel+rootfs")
    assert grubenv(board)["next_entry"] == "slot_b"
    assert grub.status().pending_trial is Slot.B
    grub.reboot()
    assert grubenv(board)["next_entry"] == ""  # GRUB cleared it before booting
    status = grub.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.A, True)
    grub.mark_good()
    assert grubenv(board)["saved_entry"] == "slot_b"
    power_cycle(board)
    assert grub.status().active is Slot.B
    assert grub.status().trial is False


def test_trial_that_dies_falls_back(grub: GrubControl, board: dict[str, Any]) -> None:
    install_into_other_slot(grub, b"bad")
    grub.reboot()
    power_cycle(board)
    status = grub.status()
    assert (status.active, status.committed, status.pending_trial) == (Slot.A, Slot.A, None)


def test_brownouts_without_a_trial_stay(grub: GrubControl, board: dict[str, Any]) -> None:
    for _ in range(5):
        power_cycle(board)
    assert grub.status().active is Slot.A


def test_rolled_back_trial_cannot_be_committed(grub: GrubControl) -> None:
    install_into_other_slot(grub, b"bad")
    grub.reboot()
    grub.mark_unbootable(Slot.B)
    with pytest.raises(BootControlError, match="unbootable"):
        grub.mark_good()
    grub.reboot()
    assert grub.status().active is Slot.A


def test_marking_a_pending_trial_bad_disarms_it(grub: GrubControl, board: dict[str, Any]) -> None:
    grub.set_trial(Slot.B)
    grub.mark_unbootable(Slot.B)
    assert grubenv(board)["next_entry"] == ""
    assert grubenv(board)["orangefriday_unbootable"] == "slot_b"
    grub.set_trial(Slot.B)
    assert grubenv(board)["orangefriday_unbootable"] == ""


def test_refusals(grub: GrubControl) -> None:
    assert_refuses_unsafe_requests(grub)


def test_grub_editenv_errors_reach_the_caller(board: dict[str, Any], tmp_path: Path) -> None:
    broken = GrubControl.from_options({**board, "grubenv": str(tmp_path / "nope")})
    with pytest.raises(BootControlError, match="cannot open"):
        broken.status()
    Path(board["grubenv"]).write_text("not a block")
    with pytest.raises(BootControlError, match="invalid environment block"):
        GrubControl.from_options(board).status()
    assert not (tmp_path / "nope").exists()  # nothing created behind the caller's back


def test_real_grub_editenv_behaviour_the_backend_relies_on(
    board: dict[str, Any], tmp_path: Path
) -> None:
    """grub-common 2.06, as Debian ships it: an empty value is kept as empty, an overfull block
    is refused, a missing file is created silently (which the backend refuses to rely on)."""

    def editenv(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["grub-editenv", str(path), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    path = Path(board["grubenv"])
    assert editenv(path, "set", "next_entry=").returncode == 0
    assert "next_entry=\n" in editenv(path, "list").stdout
    assert "too small" in editenv(path, "set", "big=" + "x" * 1100).stderr
    assert editenv(path, "unset", "saved_entry").returncode == 0
    assert "saved_entry" not in grubenv(board)
    created = tmp_path / "created"
    assert editenv(created, "list").returncode == 0
    assert created.stat().st_size == 1024
