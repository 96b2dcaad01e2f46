"""A GRUB PC whose environment block is made and edited by Debian's real `grub-editenv`
(grub-common), and a stand-in GRUB that runs the boot-once recipe of hardware/grub.py.

There is no fake grub-editenv any more. The stand-in bootloader reads and writes the block
itself, as GRUB's `load_env`/`save_env` do: exactly 1024 bytes, a `# GRUB Environment Block`
header, `name=value` lines, padded with `#`. It is the fast stand-in; the same recipe runs
in a real GRUB (grub-emu) in tests/hardware/test_grub_emu.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import durable
from hardware.fakes import fake_command

BLOCK_SIZE = 1024
HEADER = "# GRUB Environment Block\n"


def read_block(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    if len(raw) != BLOCK_SIZE or not raw.startswith(HEADER.encode()):
        raise ValueError(f"{path} is not a GRUB environment block")
    lines = raw.decode().rstrip("#").splitlines()[1:]
    return dict(line.split("=", 1) for line in lines if "=" in line)


def write_block(path: Path, env: Mapping[str, str]) -> None:
    body = (HEADER + "".join(f"{name}={value}\n" for name, value in env.items())).encode()
    if len(body) > BLOCK_SIZE:
        raise ValueError("environment block too small")
    durable.atomic_write(path, body + b"#" * (BLOCK_SIZE - len(body)), mode=None, tag="grubenv")


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
    """`python -m hardware.fakes.grub_bootloader ENV CMDLINE ENTRY=ROOT...`: a fake reboot."""
    env_file, cmdline, *pairs = argv
    power_on(Path(env_file), Path(cmdline), dict(pair.split("=", 1) for pair in pairs))
    return 0


def provision(root: Path, *, slot_size: int = 1024 * 1024) -> dict[str, Any]:
    """A GRUB PC under `root` booting slot a; returns the backend options. The block is
    created and set by the real grub-editenv, as `grub-install` and `grub-set-default` do."""
    root.mkdir(parents=True, exist_ok=True)
    env_file, cmdline = root / "grubenv", root / "cmdline"
    for args in (["create"], ["set", "saved_entry=slot_a"]):
        argv = ["grub-editenv", str(env_file), *args]  # found on PATH
        subprocess.run(argv, check=True, capture_output=True)  # noqa: S603  # no shell
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
