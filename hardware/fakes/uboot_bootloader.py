"""A U-Boot board whose environment is real and whose bootloader is a stand-in.

The environment is what Debian's libubootenv-tool reads and writes: `provision` creates it
with the real `fw_setenv` from an initial environment (one copy, or two with flags bytes when
`redundant`), and the stand-in bootloader goes through the real `fw_printenv`/`fw_setenv`
too. There are no fake U-Boot tools: the real ones install everywhere Debian does.

What stays a stand-in is the bootloader, for speed: `power_on` applies the rules of
hardware/boot_scripts/uboot-ab.cmd (count a boot while `upgrade_available=1`, fall back once
`bootcount > bootlimit`, boot `mender_boot_part` by writing its `root=` into the kernel
command line file) in milliseconds. The script itself runs in a real U-Boot under QEMU in
tests/hardware/test_uboot_bootloader.py (hardware/uboot_qemu.py), where every scenario here
is checked again against the real thing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import durable
from hardware.fakes import fake_command

BOOT_PART_VAR = "mender_boot_part"
ENV_SIZE = 0x4000
HEADER = 5  # CRC32 and, in a redundant copy, the flags byte
TOOLS = ("fw_printenv", "fw_setenv")
ROOTS = {"2": "/dev/mmcblk0p2", "3": "/dev/mmcblk0p3"}


def initial_env(bootlimit: int) -> dict[str, str]:
    """A board as it leaves the factory: slot A (partition 2) committed, no trial."""
    return {
        BOOT_PART_VAR: "2",
        "mender_boot_part_hex": "2",
        "upgrade_available": "0",
        "bootcount": "0",
        "bootlimit": f"{bootlimit:x}",
    }


def env_files(config: Path) -> list[Path]:
    """The environment copies `config` (an fw_env.config) names, in order."""
    lines = config.read_text().splitlines()
    return [Path(line.split()[0]) for line in lines if line.strip() and not line.startswith("#")]


def write_config(config: Path, copies: list[Path]) -> None:
    lines = [f"{copy} 0x0 {ENV_SIZE:#x}\n" for copy in copies]
    config.write_text("# device offset size\n" + "".join(lines))


def create_env(config: Path, values: Mapping[str, str]) -> None:
    """Zeroed copies, then the real `fw_setenv -f`: it finds no valid copy, stores the defaults."""
    for copy in env_files(config):
        with open(copy, "wb") as block:
            block.truncate(ENV_SIZE)
    defaults = config.with_name("initial-env.txt")
    defaults.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    _tool(["fw_setenv", "-c", str(config), "-f", str(defaults)])


def read_env(config: Path) -> dict[str, str]:
    """The real `fw_printenv`'s `name=value` lines, parsed here, not by the backend."""
    lines = _tool(["fw_printenv", "-c", str(config)]).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def write_env(config: Path, values: Mapping[str, str]) -> None:
    script = "".join(f"{name}={value}\n" for name, value in values.items())
    _tool(["fw_setenv", "-c", str(config), "-s", "-"], stdin=script)


def _tool(argv: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(  # noqa: S603  # the real fw_printenv/fw_setenv, no shell
        argv, input=stdin, capture_output=True, text=True, check=True
    )
    return done.stdout


def snapshot(config: Path) -> dict[Path, bytes]:
    """The bytes of every environment copy, for `tear_writes`."""
    return {copy: copy.read_bytes() for copy in env_files(config)}


def tear_writes(before: Mapping[Path, bytes]) -> list[Path]:
    """A power cut in the middle of the fw_setenv that ran since `before`: in each copy it
    rewrote, the bytes up to the middle of what changed are new and the rest are old (the CRC
    at the start is new, so the copy no longer matches it). Returns the torn copies."""
    torn = []
    for copy, old in before.items():
        new = copy.read_bytes()
        changed = [at for at in range(HEADER, len(new)) if new[at] != old[at]]
        if changed:
            cut = (changed[0] + changed[-1] + 1) // 2
            copy.write_bytes(new[:cut] + old[cut:])
            torn.append(copy)
    return torn


# --------------------------------------------------------------------------- the bootloader


def power_on(config: Path, cmdline_file: Path, roots: Mapping[str, str]) -> str:
    """Boot as uboot-ab.cmd does; `roots` maps partition number to `root=`. Returns the part."""
    env = read_env(config)
    changes = _boot_count(env, roots)
    if changes:
        write_env(config, changes)
    part = changes.get(BOOT_PART_VAR, env[BOOT_PART_VAR])
    durable.atomic_write(
        cmdline_file, f"console=ttyS0 root={roots[part]} rootwait\n".encode(), mode=None
    )
    return part


def _boot_count(env: Mapping[str, str], roots: Mapping[str, str]) -> dict[str, str]:
    """What the boot script writes before booting: the counted boot, and the fallback."""
    if env.get("upgrade_available") != "1":
        return {}
    count = int(env.get("bootcount", "0"), 16) + 1
    changes = {"bootcount": f"{count:x}"}
    if count > int(env.get("bootlimit", "1"), 16):  # altbootcmd
        other = next(part for part in roots if part != env[BOOT_PART_VAR])
        changes |= {BOOT_PART_VAR: other, "mender_boot_part_hex": f"{int(other):x}"}
        changes["upgrade_available"] = "0"
    return changes


def boot_main(argv: list[str]) -> int:
    """`python -m hardware.fakes.uboot_bootloader CONFIG CMDLINE PART=ROOT...`: a reboot."""
    config, cmdline, *pairs = argv
    power_on(Path(config), Path(cmdline), dict(pair.split("=", 1) for pair in pairs))
    return 0


def provision(
    root: Path, *, slot_size: int = 1024 * 1024, bootlimit: int = 1, redundant: bool = False
) -> dict[str, Any]:
    """A U-Boot board under `root` running slot A; returns the backend options that drive it.

    The environment sits in `root/bootfs` as on a Raspberry Pi's mounted boot partition.
    """
    bootfs = root / "bootfs"
    bootfs.mkdir(parents=True, exist_ok=True)
    config, cmdline = root / "fw_env.config", root / "cmdline"
    copies = [bootfs / "uboot.env", *([bootfs / "uboot-redund.env"] if redundant else [])]
    write_config(config, copies)
    create_env(config, initial_env(bootlimit))
    options: dict[str, Any] = {
        "fw_env_config": str(config),
        "cmdline_path": str(cmdline),
        "reboot_wait_s": 0,
    }
    for slot, part in (("a", "2"), ("b", "3")):
        device = root / f"mmcblk0p{part}"
        with open(device, "wb") as block:
            block.truncate(slot_size)
        options |= {f"slot_{slot}_device": str(device), f"slot_{slot}_root": ROOTS[part]}
    pairs = [f"{part}={dev}" for part, dev in ROOTS.items()]
    options["reboot_command"] = fake_command(__name__, str(config), str(cmdline), *pairs)
    power_on(config, cmdline, ROOTS)
    return options


if __name__ == "__main__":
    sys.exit(boot_main(sys.argv[1:]))
