"""A fake Raspberry Pi bootloader for tryboot A/B, and `reboot` with its parameter.

Written from Raspberry Pi's published documentation ("autoboot.txt" in the config.txt
chapter, and the tryboot A/B update flow), not from hardware/tryboot.py, whose parser it must
not share:

- autoboot.txt sits on the first FAT partition and is at most 512 bytes; a larger one is
  refused here (the firmware's behaviour then is not documented).
- It supports the conditional filters [all], [none], [tryboot] and board types ([pi4],
  [pi5], [cm4], ...). A filter applies to the lines after it; [all] clears every filter,
  [none] passes nothing; filters of different kinds combine; a later property overrides an
  earlier one. Lines are `property=value`; `#` starts a comment.
- `boot_partition=N` is the partition to boot unless `reboot N` named one (0: the default).
- `reboot "0 tryboot"` sets the tryboot flag for the next boot only: [tryboot] passes. With
  `tryboot_a_b=1` the firmware then loads the normal config.txt from that partition;
  without it, tryboot.txt.
- The booted partition and the flag are published as big-endian u32 values in
  /proc/device-tree/chosen/bootloader/{partition,tryboot}.

As a program (`python -m hardware.fakes.tryboot_firmware AUTOBOOT DT_DIR [PARAM]`) it is a
fake `reboot [PARAM]`: the board reboots at once with PARAM ("0 tryboot", "3", ...).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import durable
from hardware.fakes import fake_command

TRYBOOT_PARAM = "0 tryboot"
MAX_AUTOBOOT_BYTES = 512
BOARD = "pi4"
INITIAL_AUTOBOOT = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n"


@dataclass(frozen=True)
class FirmwareBoot:
    partition: int
    tryboot: bool
    config_file: str  # config.txt, or tryboot.txt on a tryboot without tryboot_a_b=1


def autoboot_properties(text: str, *, tryboot: bool, board: str = BOARD) -> dict[str, str]:
    """The properties that apply on this boot, filters evaluated line by line."""
    conditions: dict[str, bool] = {}
    properties: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            _apply_filter(conditions, line[1:-1].strip().lower(), tryboot=tryboot, board=board)
        elif "=" in line and all(conditions.values()):
            name, value = line.split("=", 1)
            properties[name.strip()] = value.strip()
    return properties


def _apply_filter(conditions: dict[str, bool], name: str, *, tryboot: bool, board: str) -> None:
    if name == "all":
        conditions.clear()
    elif name == "none":
        conditions["none"] = False
    elif name == "tryboot":
        conditions["tryboot"] = tryboot
    else:
        conditions["board"] = name == board


def parse_reboot_param(param: str) -> tuple[int, bool]:
    """`reboot "0 tryboot"` -> (0, True); `reboot 3` -> (3, False)."""
    words = param.split()
    partition = int(words[0]) if words and words[0].isdigit() else 0
    return partition, "tryboot" in words


def power_on(autoboot: Path, dt_dir: Path, *, tryboot: bool, partition: int = 0) -> int:
    """Boot as the firmware would; returns the partition number booted."""
    return firmware_boot(autoboot, dt_dir, tryboot=tryboot, partition=partition).partition


def firmware_boot(autoboot: Path, dt_dir: Path, *, tryboot: bool, partition: int) -> FirmwareBoot:
    raw = autoboot.read_bytes()
    if len(raw) > MAX_AUTOBOOT_BYTES:
        raise ValueError(f"{autoboot} is {len(raw)} bytes; autoboot.txt is limited to 512")
    properties = autoboot_properties(raw.decode(), tryboot=tryboot)
    chosen = partition or int(properties.get("boot_partition", "0")) or 1
    a_b = properties.get("tryboot_a_b") == "1"
    config = "tryboot.txt" if tryboot and not a_b else "config.txt"
    dt_dir.mkdir(parents=True, exist_ok=True)
    durable.atomic_write(dt_dir / "partition", chosen.to_bytes(4, "big"), mode=None)
    durable.atomic_write(dt_dir / "tryboot", int(tryboot).to_bytes(4, "big"), mode=None)
    return FirmwareBoot(partition=chosen, tryboot=tryboot, config_file=config)


def main(argv: list[str]) -> int:
    autoboot, dt_dir, *param = argv
    partition, tryboot = parse_reboot_param(" ".join(param))
    power_on(Path(autoboot), Path(dt_dir), tryboot=tryboot, partition=partition)
    return 0


def provision(root: Path, *, slot_size: int = 1024 * 1024) -> dict[str, Any]:
    """A fake Pi under `root` running partition 2, with the documentation's initial
    autoboot.txt; returns the backend options that drive it."""
    root.mkdir(parents=True, exist_ok=True)
    autoboot, dt_dir = root / "bootfs" / "autoboot.txt", root / "device-tree"
    autoboot.parent.mkdir(exist_ok=True)
    autoboot.write_text(INITIAL_AUTOBOOT)
    reboot = fake_command(__name__, str(autoboot), str(dt_dir))
    options: dict[str, Any] = {
        "autoboot_path": str(autoboot),
        "partition_path": str(dt_dir / "partition"),
        "reboot_command": reboot,
        "tryboot_command": [*reboot, TRYBOOT_PARAM],
        "reboot_wait_s": 0,
    }
    for slot, part in (("a", 2), ("b", 3)):
        device = root / f"mmcblk0p{part}"
        with open(device, "wb") as block:
            block.truncate(slot_size)
        options[f"slot_{slot}_device"] = str(device)
    power_on(autoboot, dt_dir, tryboot=False)
    return options


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
