"""A real U-Boot running our A/B boot script: Debian's u-boot-qemu in qemu-system-aarch64.

The board is a virtio disk with an MBR: partition 1 is FAT and holds `boot.scr` (compiled
from hardware/boot_scripts/uboot-ab.cmd with mkimage) and the environment (`uboot.env`, and
`uboot-redund.env` when redundant); partitions 2 and 3 are the slots. U-Boot's distro boot
finds boot.scr and runs it; the script picks a slot, counts the boot, falls back, prints
`OTA-BOOT slot=...` and `OTA-CMDLINE ...`, fails to load a kernel (the slots hold none) and
resets, which ends QEMU (`-no-reboot`). One boot takes about three seconds.

The environment files live in a directory on the host, the way a Raspberry Pi mounts its boot
partition at /boot/firmware: the real `fw_setenv` edits them there, and `boot` copies them
into the FAT partition (mtools) before U-Boot runs and back out afterwards, then writes the
command line U-Boot chose where the backend reads /proc/cmdline.

As a program (`python -m hardware.uboot_qemu DISK CMDLINE ENV...`) it is a `reboot`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import durable
from hardware.fakes import fake_command, uboot_bootloader

UBOOT_BIN = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
TOOLS = ("qemu-system-aarch64", "mkimage", "mkfs.vfat", "mcopy", "mpartition", "fw_setenv")
MIB = 1024 * 1024
SECTOR = 512
PARTITIONS = ((1, 16 * MIB, "0x0c"), (2, 8 * MIB, "0x83"), (3, 8 * MIB, "0x83"))
FAT = "::"
BOOT_TIMEOUT_S = 120.0


def missing_parts() -> list[str]:
    """What this machine lacks to run the board (Debian packages in docs/agent.md)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    return missing + ([] if UBOOT_BIN.exists() else [str(UBOOT_BIN)])


def boot_script_source() -> str:
    return (resources.files("hardware") / "boot_scripts" / "uboot-ab.cmd").read_text()


# --------------------------------------------------------------------------- the disk


def build_disk(disk: Path) -> None:
    """An MBR disk: FAT partition 1 with boot.scr, empty partitions 2 and 3."""
    size = MIB + sum(length for _, length, _ in PARTITIONS)
    with open(disk, "wb") as image:
        image.truncate(size)
    _partition(disk)
    _run(["mkfs.vfat", "-n", "BOOT", f"--offset={MIB // SECTOR}", str(disk), str(16 * 1024)])
    with tempfile.TemporaryDirectory() as scratch:
        source, script = Path(scratch) / "uboot-ab.cmd", Path(scratch) / "boot.scr"
        source.write_text(boot_script_source())
        _run(["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-n", "Orange Friday A/B",
              "-d", str(source), str(script)])  # fmt: skip
        copy_in(disk, script)


def _partition(disk: Path) -> None:
    """mpartition writes the MBR; it needs an mtools drive per partition."""
    with tempfile.TemporaryDirectory() as scratch:
        rc = Path(scratch) / "mtoolsrc"
        drives = "".join(
            f'drive {"xyz"[n - 1]}: file="{disk}" partition={n}\n' for n, _, _ in PARTITIONS
        )
        rc.write_text("mtools_skip_check=1\n" + drives)
        env = {**os.environ, "MTOOLSRC": str(rc)}
        _run(["mpartition", "-I", "x:"], env=env)
        start = MIB // SECTOR
        for number, length, kind in PARTITIONS:
            sectors = length // SECTOR
            drive = f"{'xyz'[number - 1]}:"
            _run(["mpartition", "-c", "-b", str(start), "-l", str(sectors), "-T", kind, drive],
                 env=env)  # fmt: skip
            start += sectors


def _fat(disk: Path) -> str:
    return f"{disk}@@{MIB}"


def copy_in(disk: Path, source: Path) -> None:
    _run(["mcopy", "-o", "-i", _fat(disk), str(source), f"{FAT}/{source.name}"])


def copy_out(disk: Path, target: Path) -> None:
    _run(["mcopy", "-o", "-i", _fat(disk), f"{FAT}/{target.name}", str(target)])


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    merged = {**(env or os.environ), "MTOOLS_SKIP_CHECK": "1"}
    done = subprocess.run(  # noqa: S603  # mtools, mkimage, mkfs.vfat: no shell
        argv, capture_output=True, text=True, check=False, env=merged
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# --------------------------------------------------------------------------- a boot


@dataclass(frozen=True)
class Boot:
    """What U-Boot printed on the serial console for one boot."""

    slot: str  # "A" or "B"
    part: str
    cmdline: str
    console: str


def run_uboot(disk: Path, timeout: float = BOOT_TIMEOUT_S) -> str:
    """Power the board on once; the serial console's text. U-Boot resets at the end of the
    script, and `-no-reboot` turns that into QEMU exiting."""
    argv = [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-m", "256",
        "-nographic", "-nic", "none", "-no-reboot", "-bios", str(UBOOT_BIN),
        "-drive", f"if=none,file={disk},format=raw,id=disk0",
        "-device", "virtio-blk-device,drive=disk0",
    ]  # fmt: skip
    done = subprocess.run(  # noqa: S603  # qemu-system-aarch64, no shell
        argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
    )
    return done.stdout + done.stderr


def parse_console(console: str) -> Boot:
    """The slot and command line from the script's OTA-BOOT / OTA-CMDLINE lines."""
    fields: dict[str, str] = {}
    cmdline = None
    for line in console.splitlines():
        text = line.strip()
        if text.startswith("OTA-BOOT slot="):
            fields = dict(word.split("=", 1) for word in text.split()[1:] if "=" in word)
        elif text.startswith("OTA-CMDLINE "):
            cmdline = text.removeprefix("OTA-CMDLINE ")
    if not fields or cmdline is None:
        raise RuntimeError(f"U-Boot did not say which slot it booted:\n{console[-3000:]}")
    return Boot(slot=fields["slot"], part=fields["part"], cmdline=cmdline, console=console)


def boot(disk: Path, cmdline_file: Path, env_copies: list[Path]) -> Boot:
    """One power-on: environment in, U-Boot runs, environment out, /proc/cmdline written."""
    for copy in env_copies:
        copy_in(disk, copy)
    result = parse_console(run_uboot(disk))
    for copy in env_copies:
        copy_out(disk, copy)
    durable.atomic_write(cmdline_file, (result.cmdline + "\n").encode(), mode=None)
    return result


def main(argv: list[str]) -> int:
    disk, cmdline, *copies = argv
    boot(Path(disk), Path(cmdline), [Path(copy) for copy in copies])
    return 0


def provision(
    root: Path, *, slot_size: int = 64 * 1024, bootlimit: int = 1, redundant: bool = False
) -> dict[str, Any]:
    """A U-Boot board in QEMU under `root`; the backend's options, whose `reboot_command`
    boots the real U-Boot. The fresh board runs slot A (written by the stand-in's first boot,
    which saves the emulator a boot that has nothing to choose)."""
    options = uboot_bootloader.provision(
        root, slot_size=slot_size, bootlimit=bootlimit, redundant=redundant
    )
    disk = root / "disk.img"
    build_disk(disk)
    copies = uboot_bootloader.env_files(Path(options["fw_env_config"]))
    cmdline = options["cmdline_path"]
    options["reboot_command"] = fake_command(__name__, str(disk), cmdline, *map(str, copies))
    options["reboot_wait_s"] = 0
    return options


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
