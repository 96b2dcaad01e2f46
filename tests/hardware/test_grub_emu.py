"""The grub.cfg snippet docs/agent.md gives GRUB users, run by a real GRUB: Debian's
grub-emu (GRUB 2.06 as a user-space program) boots from a FAT disk image holding grub.cfg and
the grubenv that the GRUB backend edits with the real grub-editenv. Each boot copies the
block into the image (as it sits on /boot on a PC), boots, reads the entry GRUB chose from
its output and copies the block back: `save_env` is GRUB's own write. (On the host
filesystem grub-emu's save_env refuses: "sparse file not allowed"; a FAT image it can write.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import require_tools

from hardware.bootcontrol import Slot
from hardware.fakes import grub_bootloader
from hardware.grub import GrubControl

TOOLS = ("grub-emu", "grub-editenv", "mkfs.vfat", "mmd", "mcopy")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
ROOTS = {"slot_a": "/dev/sda2", "slot_b": "/dev/sda3"}

pytestmark = pytest.mark.bootloader


def documented_snippet() -> str:
    """The grub.cfg lines docs/agent.md tells GRUB users to add, up to the menu entries."""
    text = DOCS.read_text()
    block = text.split("with `GRUB_DEFAULT=saved`:", 1)[1].split("```", 2)[1]
    lines = block.strip("\n").splitlines()
    return "\n".join(line for line in lines if not line.startswith("menuentry")) + "\n"


class RealGrub:
    """A PC whose GRUB is grub-emu and whose /boot is a FAT image."""

    def __init__(self, root: Path, options: dict[str, object]) -> None:
        self.root = root
        self.grubenv = Path(str(options["grubenv"]))
        self.cmdline = Path(str(options["cmdline_path"]))
        self.disk = root / "boot.img"
        entries = "".join(
            f'menuentry "{entry}" --id {entry} {{ echo "BOOTED {entry}"; halt }}\n'
            for entry in ROOTS
        )
        config = root / "grub.cfg"
        config.write_text("set timeout=0\n" + documented_snippet() + entries)
        with open(self.disk, "wb") as image:
            image.truncate(4 * 1024 * 1024)
        self._run("mkfs.vfat", "-n", "BOOT", str(self.disk))
        self._run("mmd", "-i", str(self.disk), "::/boot", "::/boot/grub")
        self._run("mcopy", "-i", str(self.disk), str(config), "::/boot/grub/grub.cfg")
        (root / "device.map").write_text(f"(hd0) {self.disk}\n")

    def power_on(self) -> str:
        """One boot: the entry GRUB chose (its `root=` goes to the kernel command line)."""
        self._run("mcopy", "-o", "-i", str(self.disk), str(self.grubenv), "::/boot/grub/grubenv")
        argv = ["grub-emu", "-r", "hd0", "-d", "/boot/grub", "-m", str(self.root / "device.map")]
        output = self._run(*argv)
        self._run("mcopy", "-o", "-i", str(self.disk), "::/boot/grub/grubenv", str(self.grubenv))
        booted = re.findall(r"BOOTED (slot_[ab])", output)
        assert len(booted) == 1, output[-500:]
        self.cmdline.write_text(f"BOOT_IMAGE=/vmlinuz root={ROOTS[booted[0]]} ro\n")
        return booted[0]

    @staticmethod
    def _run(*argv: str) -> str:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=True, timeout=60, stdin=subprocess.DEVNULL
        )
        return done.stdout + done.stderr


@pytest.fixture
def pc(tmp_path: Path) -> tuple[GrubControl, RealGrub]:
    require_tools(*TOOLS)
    options = grub_bootloader.provision(tmp_path / "pc", slot_size=4096)
    grub = RealGrub(tmp_path / "pc", options)
    assert grub.power_on() == "slot_a"
    return GrubControl.from_options(options), grub


def test_a_trial_boots_the_new_slot_once_then_falls_back(pc: tuple[GrubControl, RealGrub]) -> None:
    boot, grub = pc
    boot.mark_unbootable(Slot.B)
    boot.set_trial(Slot.B)
    assert grub.power_on() == "slot_b"
    status = boot.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.A, True)
    assert grub.power_on() == "slot_a"  # not marked good: the next boot is the committed one
    assert boot.status().active is Slot.A


def test_mark_good_makes_the_new_slot_stick(pc: tuple[GrubControl, RealGrub]) -> None:
    boot, grub = pc
    boot.set_trial(Slot.B)
    assert grub.power_on() == "slot_b"
    boot.mark_good()
    assert [grub.power_on() for _ in range(2)] == ["slot_b", "slot_b"]
    status = boot.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.B, False)
