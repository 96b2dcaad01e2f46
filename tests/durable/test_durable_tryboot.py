"""Regression: the tryboot backend's autoboot.txt writes leave no temp file behind.

The old `hardware.atomic_file.write_atomically` closed its temp file on a failure between
creating and renaming it but never removed it, so a failure at `autoboot.write-temp` or
`autoboot.fsync-temp` left `.autoboot.txt.<random>.tmp` on the boot partition. `durable`
removes it on any failure, and the target stays old or new.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import durable
from hardware.bootcontrol import Slot
from hardware.fakes import tryboot_firmware as fake_pi
from hardware.registry import open_boot_control
from hardware.tryboot import TrybootControl, parse_autoboot


class Cut(BaseException):
    """Raised by the step hook, as a simulated power cut is."""


def cut_at(step: str) -> durable.StepHook:
    def hook(name: str) -> None:
        if name == step:
            raise Cut(name)

    return hook


def pi_with_hook(root: Path, on_step: durable.StepHook) -> TrybootControl:
    plain = open_boot_control("tryboot", fake_pi.provision(root, slot_size=32 * 1024))
    assert isinstance(plain, TrybootControl)
    return TrybootControl(plain.slots, plain.settings, on_step=on_step)


def tryboot_partition(pi: TrybootControl) -> str | None:
    sections = parse_autoboot(pi.settings.autoboot_path.read_text())
    return sections.get("tryboot", {}).get("boot_partition")


def test_set_trial_goes_through_the_four_autoboot_steps(tmp_path: Path) -> None:
    seen: list[str] = []
    pi = pi_with_hook(tmp_path / "pi", seen.append)
    pi.set_trial(Slot.B)
    assert seen == durable.step_names("autoboot")
    assert tryboot_partition(pi) == "3"


@pytest.mark.parametrize("step", durable.step_names("autoboot"))
def test_a_failed_autoboot_write_leaves_old_or_new_and_no_temp_file(
    tmp_path: Path, step: str
) -> None:
    pi = pi_with_hook(tmp_path / "pi", cut_at(step))
    boot_partition = pi.settings.autoboot_path.parent
    with pytest.raises(Cut):
        pi.set_trial(Slot.B)
    renamed = step == "autoboot.fsync-dir"
    assert tryboot_partition(pi) == ("3" if renamed else "2")
    assert sorted(p.name for p in boot_partition.iterdir()) == ["autoboot.txt"]
    assert durable.stale_temps(pi.settings.autoboot_path) == []
