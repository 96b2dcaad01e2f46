"""A fake Raspberry Pi firmware for tryboot A/B, and `reboot` with its "0 tryboot" parameter.

`power_on` reads autoboot.txt as the EEPROM bootloader does: with `tryboot_a_b=1` the tryboot
flag selects `[tryboot] boot_partition`, otherwise `[all] boot_partition`; it then publishes
the booted partition and the flag in a fake /proc/device-tree/chosen/bootloader as big-endian
u32 values. The flag lives only for that one boot, as on the real board.

As a program (`python -m hardware.fakes.tryboot_firmware AUTOBOOT DT_DIR [PARAM]`) it is a
fake `reboot [PARAM]`: the board reboots at once, into the tryboot slot if PARAM says
"0 tryboot".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import durable
from hardware.fakes import fake_command
from hardware.tryboot import parse_autoboot, render_autoboot, with_partitions

TRYBOOT_PARAM = "0 tryboot"


def power_on(autoboot: Path, dt_dir: Path, *, tryboot: bool) -> int:
    """Boot as the firmware would; returns the partition number booted."""
    sections = parse_autoboot(autoboot.read_text())
    use_tryboot = tryboot and sections["all"].get("tryboot_a_b") == "1"
    section = sections.get("tryboot", {}) if use_tryboot else sections["all"]
    partition = int(section.get("boot_partition", sections["all"].get("boot_partition", "1")))
    dt_dir.mkdir(parents=True, exist_ok=True)
    durable.atomic_write(dt_dir / "partition", partition.to_bytes(4, "big"), mode=None)
    durable.atomic_write(dt_dir / "tryboot", int(use_tryboot).to_bytes(4, "big"), mode=None)
    return partition


def main(argv: list[str]) -> int:
    autoboot, dt_dir, *param = argv
    power_on(Path(autoboot), Path(dt_dir), tryboot=" ".join(param).strip() == TRYBOOT_PARAM)
    return 0


def provision(root: Path, *, slot_size: int = 1024 * 1024) -> dict[str, Any]:
    """A fake Pi under `root` running partition 2; returns the backend options that drive it."""
    root.mkdir(parents=True, exist_ok=True)
    autoboot, dt_dir = root / "bootfs" / "autoboot.txt", root / "device-tree"
    autoboot.parent.mkdir(exist_ok=True)
    autoboot.write_text(render_autoboot(with_partitions({"all": {}}, 2, 2)))
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
