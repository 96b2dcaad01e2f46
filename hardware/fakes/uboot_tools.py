"""Fake U-Boot userspace tools and a fake U-Boot, over a text environment file.

`fw_printenv [-c CONFIG] [-n] [NAME...]` and `fw_setenv [-c CONFIG] (NAME [VALUE...] |
-s SCRIPT|-)` behave like libubootenv's: CONFIG's first line names the environment "device"
(here a text file of `name=value` lines), writes replace it atomically, a missing variable is
an error. `power_on` is what U-Boot with CONFIG_BOOTCOUNT_ENV and Mender's boot script does:
count a boot while `upgrade_available=1`, run `altbootcmd` (switch to the other partition,
clear `upgrade_available`) once `bootcount > bootlimit`, then boot `mender_boot_part` by
writing its `root=` into the kernel command line file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import durable
from hardware.envtext import format_assignments, parse_assignments
from hardware.fakes import fake_command

BOOT_PART_VAR = "mender_boot_part"


def env_file_of(config: Path) -> Path:
    for line in config.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            return Path(line.split()[0])
    raise ValueError(f"{config} names no environment device")


def read_env(env_file: Path) -> dict[str, str]:
    return parse_assignments(env_file.read_text())


def write_env(env_file: Path, env: Mapping[str, str]) -> None:
    durable.atomic_write(env_file, format_assignments(env).encode(), mode=None, tag="ubootenv")


# --------------------------------------------------------------------------- the tools


def main(argv: list[str]) -> int:
    tool, args = Path(argv[0]).name, argv[1:]
    config = Path("/etc/fw_env.config")
    if args[:1] == ["-c"]:
        config, args = Path(args[1]), args[2:]
    env_file = env_file_of(config)
    if tool == "fw_printenv":
        return _printenv(env_file, args)
    if tool == "fw_setenv":
        return _setenv(env_file, args)
    print(f"fake uboot tools: unknown tool {tool}", file=sys.stderr)
    return 2


def _printenv(env_file: Path, args: list[str]) -> int:
    env = read_env(env_file)
    values_only = args[:1] == ["-n"]
    names = args[1:] if values_only else args
    for name in names or sorted(env):
        if name not in env:
            print(f'## Error: "{name}" not defined', file=sys.stderr)
            return 1
        print(env[name] if values_only else f"{name}={env[name]}")
    return 0


def _setenv(env_file: Path, args: list[str]) -> int:
    if args[:1] == ["-s"]:
        source = sys.stdin.read() if args[1] == "-" else Path(args[1]).read_text()
        changes = [line.split(None, 1) for line in source.splitlines() if line.strip()]
    elif args:
        changes = [[args[0], " ".join(args[1:])]] if len(args) > 1 else [[args[0]]]
    else:
        print("usage: fw_setenv [-c config] name [value] | -s script", file=sys.stderr)
        return 1
    env = read_env(env_file)
    for change in changes:
        if len(change) == 1 or not change[1].strip():
            env.pop(change[0], None)
        else:
            env[change[0]] = change[1].strip()
    write_env(env_file, env)
    return 0


# --------------------------------------------------------------------------- the bootloader


def power_on(env_file: Path, cmdline_file: Path, roots: Mapping[str, str]) -> str:
    """Boot as U-Boot would; `roots` maps partition number to `root=` value. Returns the part."""
    env = read_env(env_file)
    if env.get("upgrade_available") == "1":
        env["bootcount"] = str(int(env.get("bootcount", "0")) + 1)
        if int(env["bootcount"]) > int(env.get("bootlimit", "1")):
            _altbootcmd(env, roots)
        write_env(env_file, env)
    part = env[BOOT_PART_VAR]
    durable.atomic_write(
        cmdline_file, f"console=ttyS0 root={roots[part]} rootwait\n".encode(), mode=None
    )
    return part


def _altbootcmd(env: dict[str, str], roots: Mapping[str, str]) -> None:
    other = next(p for p in roots if p != env[BOOT_PART_VAR])
    env[BOOT_PART_VAR] = other
    env["mender_boot_part_hex"] = f"{int(other):x}"
    env["upgrade_available"] = "0"


def boot_main(argv: list[str]) -> int:
    """`python -m hardware.fakes.uboot_tools CONFIG CMDLINE PART=ROOT...`: a fake reboot."""
    config, cmdline, *pairs = argv
    roots = dict(pair.split("=", 1) for pair in pairs)
    power_on(env_file_of(Path(config)), Path(cmdline), roots)
    return 0


def provision(root: Path, *, slot_size: int = 1024 * 1024, bootlimit: int = 1) -> dict[str, Any]:
    """A fake U-Boot board under `root`; returns the backend options that drive it."""
    root.mkdir(parents=True, exist_ok=True)
    env_file, config, cmdline = root / "uboot.env", root / "fw_env.config", root / "cmdline"
    config.write_text(f"# device offset size\n{env_file} 0x0 0x4000\n")
    write_env(
        env_file,
        {
            BOOT_PART_VAR: "2",
            "mender_boot_part_hex": "2",
            "upgrade_available": "0",
            "bootcount": "0",
            "bootlimit": str(bootlimit),
            "altbootcmd": "run mender_altbootcmd",
        },
    )
    roots = {"2": "/dev/mmcblk0p2", "3": "/dev/mmcblk0p3"}
    options: dict[str, Any] = {
        "fw_env_config": str(config),
        "cmdline_path": str(cmdline),
        "reboot_wait_s": 0,
    }
    for slot, part in (("a", "2"), ("b", "3")):
        device = root / f"mmcblk0p{part}"
        with open(device, "wb") as block:
            block.truncate(slot_size)
        options |= {f"slot_{slot}_device": str(device), f"slot_{slot}_root": roots[part]}
    pairs = [f"{part}={dev}" for part, dev in roots.items()]
    options["reboot_command"] = fake_command(__name__, str(config), str(cmdline), *pairs)
    power_on(env_file, cmdline, roots)
    return options


if __name__ == "__main__":
    sys.exit(boot_main(sys.argv[1:]))
