"""A fake `grub-editenv` and a fake GRUB that runs the boot-once recipe of hardware/grub.py.

The environment block is GRUB's format: exactly 1024 bytes, a `# GRUB Environment Block`
header, `name=value` lines, padded with `#`. `grub-editenv FILE create|list|set N=V...|unset
N...` behave like the real tool (a missing file or an overfull block is an error).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import durable
from hardware.envtext import format_assignments, parse_assignments
from hardware.fakes import fake_command

BLOCK_SIZE = 1024
HEADER = "# GRUB Environment Block\n"


def read_block(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    if len(raw) != BLOCK_SIZE or not raw.startswith(HEADER.encode()):
        raise ValueError(f"{path} is not a GRUB environment block")
    return parse_assignments(raw.decode().rstrip("#"))


def write_block(path: Path, env: Mapping[str, str]) -> None:
    body = (HEADER + format_assignments(env)).encode()
    if len(body) > BLOCK_SIZE:
        raise ValueError("environment block too small")
    durable.atomic_write(path, body + b"#" * (BLOCK_SIZE - len(body)), mode=None, tag="grubenv")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("Usage: grub-editenv FILENAME COMMAND", file=sys.stderr)
        return 1
    path, command, args = Path(argv[1]), argv[2], argv[3:]
    if command == "create":
        write_block(path, {})
        return 0
    try:
        return _edit(path, command, args)
    except FileNotFoundError:
        print(
            f"grub-editenv: error: cannot open `{path}': No such file or directory", file=sys.stderr
        )
    except ValueError as exc:
        print(f"grub-editenv: error: {exc}.", file=sys.stderr)
    return 1


def _edit(path: Path, command: str, args: list[str]) -> int:
    env = read_block(path)
    if command == "list":
        print(format_assignments(env), end="")
        return 0
    if command == "set":
        for arg in args:
            name, _, value = arg.partition("=")
            env[name] = value
    elif command == "unset":
        for name in args:
            env.pop(name, None)
    else:
        raise ValueError(f"unknown command `{command}'")
    write_block(path, env)
    return 0


# --------------------------------------------------------------------------- the bootloader


def power_on(env_file: Path, cmdline_file: Path, roots: Mapping[str, str]) -> str:
    """Run the boot-once recipe; `roots` maps entry id to `root=`. Returns the entry booted."""
    env = read_block(env_file)
    entry = env.get("next_entry", "")
    if entry:
        env["next_entry"] = ""  # save_env next_entry: cleared before the kernel runs
        write_block(env_file, env)
    else:
        entry = env.get("saved_entry") or next(iter(roots))
    durable.atomic_write(
        cmdline_file, f"BOOT_IMAGE=/vmlinuz root={roots[entry]} ro\n".encode(), mode=None
    )
    return entry


def boot_main(argv: list[str]) -> int:
    """`python -m hardware.fakes.grub_tools ENV CMDLINE ENTRY=ROOT...`: a fake reboot."""
    env_file, cmdline, *pairs = argv
    power_on(Path(env_file), Path(cmdline), dict(pair.split("=", 1) for pair in pairs))
    return 0


def provision(root: Path, *, slot_size: int = 1024 * 1024) -> dict[str, Any]:
    """A fake GRUB PC under `root` booting slot a; returns the backend options."""
    root.mkdir(parents=True, exist_ok=True)
    env_file, cmdline = root / "grubenv", root / "cmdline"
    write_block(env_file, {"saved_entry": "slot_a"})
    roots = {"slot_a": "/dev/sda2", "slot_b": "/dev/sda3"}
    pairs = [f"{entry}={dev}" for entry, dev in roots.items()]
    reboot = fake_command(__name__, str(env_file), str(cmdline), *pairs)
    options: dict[str, Any] = {
        "grubenv": str(env_file),
        "cmdline_path": str(cmdline),
        "reboot_command": reboot,
        "reboot_wait_s": 0,
    }
    for slot in ("a", "b"):
        device = root / f"sda{2 if slot == 'a' else 3}"
        with open(device, "wb") as block:
            block.truncate(slot_size)
        options |= {f"slot_{slot}_device": str(device), f"slot_{slot}_root": roots[f"slot_{slot}"]}
    power_on(env_file, cmdline, roots)
    return options


if __name__ == "__main__":
    sys.exit(boot_main(sys.argv[1:]))
