"""GRUB A/B through its environment block (`grub-editenv FILE list|set|unset`).

The grub.cfg this expects (the boot-once recipe `grub-reboot` relies on):

    load_env
    if [ "${next_entry}" ]; then
        set default="${next_entry}"; set next_entry=; save_env next_entry
    else
        set default="${saved_entry}"
    fi
    menuentry "slot a" --id slot_a { linux /vmlinuz root=/dev/sda2 ... }
    menuentry "slot b" --id slot_b { linux /vmlinuz root=/dev/sda3 ... }

- committed slot = `saved_entry` (what `grub-set-default` writes);
- trial          = `next_entry` (what `grub-reboot` writes): GRUB clears it before booting
                   it, so a trial has exactly one attempt and any later boot is the committed;
- commit         = `saved_entry` = the running slot's entry;
- mark bad       = clear `next_entry` if it names the slot, and list the slot's entry in
                   `orangefriday_unbootable` so a rolled-back trial cannot be committed.

Each request is one `grub-editenv set` call, so one write of the 1 KiB block (the real tool
writes FILE.new and renames it over FILE). The running slot comes from `root=` on the kernel
command line. Checked against Debian's grub-editenv (grub-common 2.06), which creates a
missing file without a word: a missing block is therefore refused here, not listed as empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from hardware.blockdev import SlotDevices, boot_once_status, open_inactive_slot
from hardware.bootcontrol import BootControlError, BootStatus, Slot, SlotSink
from hardware.commands import reboot_and_wait, run_tool
from hardware.envtext import parse_assignments
from hardware.options import command_option, optional_int, optional_path, optional_str

UNBOOTABLE_VAR = "orangefriday_unbootable"


@dataclass(frozen=True)
class GrubSettings:
    env_file: Path
    entries: Mapping[Slot, str]  # menuentry id of each slot
    reboot_command: tuple[str, ...] = ("reboot",)
    reboot_wait_s: float = 120.0

    def slot_of(self, entry: str) -> Slot:
        for slot, name in self.entries.items():
            if name == entry:
                return slot
        raise BootControlError(f"GRUB entry {entry!r} is neither slot's entry")


@dataclass(frozen=True)
class GrubEnv:
    committed: Slot
    next_entry: Slot | None
    unbootable: frozenset[Slot]


class GrubControl:
    """BootControl over a GRUB environment block (see the module docstring)."""

    def __init__(self, slots: SlotDevices, settings: GrubSettings) -> None:
        self.slots = slots
        self.settings = settings

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> GrubControl:
        settings = GrubSettings(
            env_file=optional_path(options, "grubenv", "/boot/grub/grubenv"),
            entries={
                s: optional_str(options, f"slot_{s.value}_entry", f"slot_{s.value}") for s in Slot
            },
            reboot_command=tuple(command_option(options, "reboot_command", ["reboot"])),
            reboot_wait_s=float(optional_int(options, "reboot_wait_s", 120)),
        )
        return cls(SlotDevices.from_options(options, "grub"), settings)

    # ------------------------------------------------------------------ BootControl

    def status(self) -> BootStatus:
        env = self._read_env()
        return boot_once_status(self.slots.booted_slot(), env.committed, env.next_entry)

    def slot_size(self, slot: Slot) -> int:
        return self.slots.size(slot)

    def open_slot(self, slot: Slot) -> SlotSink:
        return open_inactive_slot(self.slots, self.status(), slot)

    def open_slot_for_read(self, slot: Slot) -> BinaryIO:
        return self.slots.open_for_read(slot)

    def mark_unbootable(self, slot: Slot) -> None:
        env = self._read_env()
        if slot == env.committed:
            raise BootControlError(f"slot {slot} is the committed slot; nothing would boot")
        values = {UNBOOTABLE_VAR: self._entry_list(env.unbootable | {slot})}
        if env.next_entry == slot:
            values["next_entry"] = ""
        self._set(values)

    def set_trial(self, slot: Slot) -> None:
        env = self._read_env()
        if slot == env.committed:
            raise BootControlError(f"slot {slot} is the committed slot; there is nothing to try")
        self._set(
            {
                "next_entry": self.settings.entries[slot],
                UNBOOTABLE_VAR: self._entry_list(env.unbootable - {slot}),
            }
        )

    def mark_good(self) -> None:
        env = self._read_env()
        active = self.slots.booted_slot()
        if active == env.committed:
            return
        if active in env.unbootable:
            raise BootControlError(f"slot {active} was marked unbootable; it cannot be committed")
        self._set({"saved_entry": self.settings.entries[active]})

    def reboot(self) -> None:
        reboot_and_wait(self.settings.reboot_command, self.settings.reboot_wait_s)

    # ------------------------------------------------------------------ the env block

    def _read_env(self) -> GrubEnv:
        path = self.settings.env_file
        if not path.exists():  # the real grub-editenv would create an empty block and say 0
            raise BootControlError(
                f"cannot open {path}: no such file (create it: grub-editenv {path} create, "
                "then grub-editenv set saved_entry=<slot a's entry>)"
            )
        raw = parse_assignments(run_tool(["grub-editenv", str(path), "list"]))
        saved = raw.get("saved_entry") or self.settings.entries[Slot.A]
        next_entry = raw.get("next_entry", "")
        bad = raw.get(UNBOOTABLE_VAR, "").split()
        return GrubEnv(
            committed=self.settings.slot_of(saved),
            next_entry=self.settings.slot_of(next_entry) if next_entry else None,
            unbootable=frozenset(self.settings.slot_of(entry) for entry in bad),
        )

    def _entry_list(self, slots: frozenset[Slot]) -> str:
        return " ".join(sorted(self.settings.entries[s] for s in slots))

    def _set(self, values: Mapping[str, str]) -> None:
        assignments = [f"{name}={value}" for name, value in values.items()]
        run_tool(["grub-editenv", str(self.settings.env_file), "set", *assignments])
