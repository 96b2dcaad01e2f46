"""Raspberry Pi tryboot A/B: `autoboot.txt` on the boot partition and a one-shot reboot flag.

With `tryboot_a_b=1` the firmware boots `[all] boot_partition` normally, and `[tryboot]
boot_partition` once after `reboot "0 tryboot"` (the flag is volatile: any later reboot, a
watchdog reset or a power cut, boots `[all]` again). So a trial has exactly one attempt.

- committed slot = `[all] boot_partition`;
- trial armed    = `[tryboot] boot_partition` names the other slot (otherwise it names the
                   committed one, so a stray tryboot is harmless);
- commit         = rewrite autoboot.txt with `[all]` on the running slot, atomically;
- running slot   = /proc/device-tree/chosen/bootloader/partition (a big-endian u32).

`reboot()` asks for a tryboot when a trial is armed and not running, a plain reboot otherwise.
A trial whose boot dies leaves the arming in place; the next `reboot()` tries it again, and the
agent's step counter bounds that. autoboot.txt sits on FAT: the replace is as atomic as vfat's
rename, which is what the Pi firmware itself relies on, and is never chmod-ed (vfat refuses).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import durable
from hardware.blockdev import PartitionMap, SlotDevices, boot_once_status, open_inactive_slot
from hardware.bootcontrol import BootControlError, BootStatus, Slot, SlotSink
from hardware.commands import reboot_and_wait
from hardware.options import command_option, optional_int, optional_path

Sections = dict[str, dict[str, str]]


def parse_autoboot(text: str) -> Sections:
    """`[section]` headers and `key=value` lines; keys before any header belong to [all]."""
    sections: Sections = {"all": {}}
    current = sections["all"]
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def render_autoboot(sections: Mapping[str, Mapping[str, str]]) -> str:
    blocks = []
    for name, keys in sections.items():
        lines = [f"[{name}]", *(f"{k}={v}" for k, v in keys.items())]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def with_partitions(sections: Sections, committed: int, tryboot: int) -> Sections:
    """The same autoboot.txt with the A/B keys set; other keys and sections are kept."""
    updated = {name: dict(keys) for name, keys in sections.items()}
    updated.setdefault("all", {}).update(tryboot_a_b="1", boot_partition=str(committed))
    updated.setdefault("tryboot", {})["boot_partition"] = str(tryboot)
    return updated


@dataclass(frozen=True)
class TrybootSettings:
    autoboot_path: Path = Path("/boot/firmware/autoboot.txt")
    partition_path: Path = Path("/proc/device-tree/chosen/bootloader/partition")
    partitions: PartitionMap = field(default_factory=PartitionMap)
    reboot_command: tuple[str, ...] = ("reboot",)
    tryboot_command: tuple[str, ...] = ("reboot", "0 tryboot")
    reboot_wait_s: float = 120.0


class TrybootControl:
    """BootControl over Raspberry Pi tryboot (see the module docstring)."""

    def __init__(
        self,
        slots: SlotDevices,
        settings: TrybootSettings,
        *,
        on_step: durable.StepHook = durable.no_step,
    ) -> None:
        self.slots = slots
        self.settings = settings
        self.on_step = on_step  # test seam: called before each `autoboot.*` step (see durable)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TrybootControl:
        default = TrybootSettings()
        settings = TrybootSettings(
            autoboot_path=optional_path(options, "autoboot_path", str(default.autoboot_path)),
            partition_path=optional_path(options, "partition_path", str(default.partition_path)),
            partitions=PartitionMap.from_options(options),
            reboot_command=tuple(command_option(options, "reboot_command", ["reboot"])),
            tryboot_command=tuple(
                command_option(options, "tryboot_command", ["reboot", "0 tryboot"])
            ),
            reboot_wait_s=float(optional_int(options, "reboot_wait_s", 120)),
        )
        return cls(SlotDevices.from_options(options, "tryboot"), settings)

    # ------------------------------------------------------------------ BootControl

    def status(self) -> BootStatus:
        committed, tryboot = self._partitions()
        return boot_once_status(self._booted_slot(), committed, tryboot)

    def slot_size(self, slot: Slot) -> int:
        return self.slots.size(slot)

    def open_slot(self, slot: Slot) -> SlotSink:
        return open_inactive_slot(self.slots, self.status(), slot)

    def open_slot_for_read(self, slot: Slot) -> BinaryIO:
        return self.slots.open_for_read(slot)

    def mark_unbootable(self, slot: Slot) -> None:
        committed, tryboot = self._partitions()
        if slot == committed:
            raise BootControlError(f"slot {slot} is the committed slot; nothing would boot")
        if tryboot == slot:  # disarm: a tryboot now boots the committed slot
            self._write_partitions(committed, committed)

    def set_trial(self, slot: Slot) -> None:
        committed, _ = self._partitions()
        if slot == committed:
            raise BootControlError(f"slot {slot} is the committed slot; there is nothing to try")
        self._write_partitions(committed, slot)

    def mark_good(self) -> None:
        committed, tryboot = self._partitions()
        active = self._booted_slot()
        if active == committed:
            return
        if tryboot != active:
            raise BootControlError(f"slot {active} was marked unbootable; it cannot be committed")
        self._write_partitions(active, active)

    def reboot(self) -> None:
        pending = self.status().pending_trial
        command = self.settings.tryboot_command if pending else self.settings.reboot_command
        reboot_and_wait(command, self.settings.reboot_wait_s)

    # ------------------------------------------------------------------ files

    def _read_sections(self) -> Sections:
        try:
            return parse_autoboot(self.settings.autoboot_path.read_text())
        except OSError as exc:
            path = self.settings.autoboot_path
            raise BootControlError(f"cannot read {path}: {exc.strerror}") from None

    def _partitions(self) -> tuple[Slot, Slot]:
        """(committed, tryboot) slots from autoboot.txt."""
        sections = self._read_sections()
        if sections["all"].get("tryboot_a_b") != "1":
            raise BootControlError(f"{self.settings.autoboot_path} does not enable tryboot_a_b")
        committed = self._slot_named(sections["all"].get("boot_partition"))
        tryboot = sections.get("tryboot", {}).get("boot_partition")
        return committed, committed if tryboot is None else self._slot_named(tryboot)

    def _slot_named(self, value: str | None) -> Slot:
        return self.settings.partitions.slot_of(value or "")

    def _write_partitions(self, committed: Slot, tryboot: Slot) -> None:
        sections = with_partitions(
            self._read_sections(),
            self.settings.partitions.part_of(committed),
            self.settings.partitions.part_of(tryboot),
        )
        durable.atomic_write(
            self.settings.autoboot_path,
            render_autoboot(sections).encode(),
            mode=None,  # FAT refuses chmod; the firmware only needs to read it
            on_step=self.on_step,
            tag="autoboot",
        )

    def _booted_slot(self) -> Slot:
        try:
            raw = self.settings.partition_path.read_bytes()
        except OSError as exc:
            path = self.settings.partition_path
            raise BootControlError(f"cannot read {path}: {exc.strerror}") from None
        if len(raw) != 4:
            raise BootControlError(f"{self.settings.partition_path} is not a 32-bit value")
        return self.settings.partitions.slot_of(int.from_bytes(raw, "big"))
