"""One lab board per boot backend, each with the boot tools it would have on a device.

`provision_board(kind, root, slot_size)` makes a board the agent can drive through
`open_boot_control(kind, board.options)`: the simulated device; U-Boot with Debian's real
`fw_setenv`/`fw_printenv` on a redundant file-backed environment; GRUB with the real
`grub-editenv`; the Raspberry Pi firmware and Android's bootctl/update_engine_client as
fakes written from their documentation (hardware/fakes). Each board's `reboot_command` boots
its bootloader in place; `power_on()` is the same boot when nobody asked for it (after a
power cut). Slot A holds a factory image, so a test can show it was never touched.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardware.bootcontrol import BootControl, Slot
from hardware.fakes import android_tools, grub_bootloader, tryboot_firmware, uboot_bootloader
from hardware.registry import open_boot_control
from hardware.sim import SimDevice

BOARD_KINDS = ("sim", "uboot", "grub", "tryboot", "android")
TOOLS: dict[str, tuple[str, ...]] = {  # the real programs each board needs installed
    "uboot": uboot_bootloader.TOOLS,
    "grub": ("grub-editenv",),
}
FACTORY_BYTES = 64 * 1024


@dataclass(frozen=True)
class LabBoard:
    kind: str  # the agent's `[slot] backend`
    root: Path
    options: dict[str, Any]  # the agent's `[slot]` options
    slot_files: dict[Slot, Path]  # what each slot's bytes are on this board
    boot_in_place: Callable[[], None]

    def boot_control(self) -> BootControl:
        return open_boot_control(self.kind, self.options)

    def power_on(self) -> None:
        """The board boots after a power cut: its bootloader picks a slot by itself."""
        self.boot_in_place()

    def slot_bytes(self, slot: Slot) -> bytes:
        path = self.slot_files[slot]
        return path.read_bytes() if path.exists() else b""


def provision_board(kind: str, root: Path, slot_size: int, *, model: str = "board") -> LabBoard:
    """A fresh board of `kind` under `root`, running slot A (see the module docstring)."""
    if kind == "sim":
        SimDevice.provision(root, slot_size=slot_size, model=model)
        files = {slot: root / f"slot_{slot.value}.img" for slot in Slot}
        board = LabBoard(kind, root, {"root": str(root)}, files, lambda: _sim_boot(root))
    elif kind == "android":
        _, options = android_tools.provision(root)
        options["max_payload_size"] = slot_size
        files = {slot: root / f"system_{slot.value}.img" for slot in Slot}
        board = LabBoard(kind, root, options, files, _runs(options["reboot_command"]))
    else:
        options = _provision_firmware(kind, root, slot_size)
        files = {slot: Path(options[f"slot_{slot.value}_device"]) for slot in Slot}
        board = LabBoard(kind, root, options, files, _runs(options["reboot_command"]))
    _write_factory_image(board.slot_files[Slot.A], root.name)
    return board


def _provision_firmware(kind: str, root: Path, slot_size: int) -> dict[str, Any]:
    if kind == "uboot":
        return uboot_bootloader.provision(root, slot_size=slot_size, bootlimit=1, redundant=True)
    if kind == "grub":
        return grub_bootloader.provision(root, slot_size=slot_size)
    if kind == "tryboot":
        return tryboot_firmware.provision(root, slot_size=slot_size)
    raise ValueError(f"no lab board of kind {kind!r}; choose one of {', '.join(BOARD_KINDS)}")


def factory_image(name: str) -> bytes:
    return random.Random(f"factory {name}").randbytes(FACTORY_BYTES)


def _write_factory_image(path: Path, name: str) -> None:
    with open(path, "r+b" if path.exists() else "wb") as slot:
        slot.write(factory_image(name))


def _sim_boot(root: Path) -> None:
    SimDevice(root).boot()


def _runs(argv: list[str]) -> Callable[[], None]:
    def boot() -> None:
        subprocess.run(argv, check=True, capture_output=True)  # a fake reboot

    return boot
