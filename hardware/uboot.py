"""U-Boot A/B through its environment, the way Mender drives it (`fw_printenv`/`fw_setenv`).

The environment names the partition to boot (`mender_boot_part`) and carries U-Boot's boot
counter: while `upgrade_available=1` every boot increments `bootcount`, and once it exceeds
`bootlimit` U-Boot runs `altbootcmd`, which switches `mender_boot_part` back to the other
partition and clears `upgrade_available`. So:

- trial:  upgrade_available=1, bootcount=0, boot part = the new slot (one `fw_setenv -s`);
- commit: upgrade_available=0, bootcount=0 (the new slot simply stays the boot part);
- mark a pending or running trial bad: boot part = the committed slot, upgrade_available=0.

The running slot is read from the kernel command line (`root=`), not from the environment.
`fw_setenv -s` applies a whole script in one environment write (with a redundant environment,
two copies with a flags byte, a power cut leaves the old or the new environment).

Checked against Debian's real libubootenv-tool (0.3.2): a script line must read `name=value`
(lines without `=` are skipped without a word), a missing variable prints `name=` with exit 0
and `-s` with a missing file succeeds having set nothing. So every write is read back, and a
write the tool skipped is an error rather than a trial that was never armed. Numbers are
read as U-Boot reads them (`setexpr`/`itest`): hexadecimal. The boot script that holds the
other half of these rules is hardware/boot_scripts/uboot-ab.cmd (docs/agent.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from hardware.blockdev import PartitionMap, SlotDevices, open_inactive_slot
from hardware.bootcontrol import BootControlError, BootStatus, Slot, SlotSink
from hardware.commands import reboot_and_wait, run_tool
from hardware.envtext import parse_assignments
from hardware.options import command_option, optional_int, optional_str


@dataclass(frozen=True)
class UBootSettings:
    fw_env_config: str = "/etc/fw_env.config"
    boot_part_var: str = "mender_boot_part"
    boot_part_hex_var: str = "mender_boot_part_hex"  # empty: not kept
    partitions: PartitionMap = field(default_factory=PartitionMap)
    reboot_command: tuple[str, ...] = ("reboot",)
    reboot_wait_s: float = 120.0


@dataclass(frozen=True)
class UBootEnv:
    """The variables that matter, read from `fw_printenv`."""

    boot_slot: Slot
    upgrade_available: bool
    bootcount: int
    bootlimit: int


class UBootControl:
    """BootControl over a Mender-style U-Boot environment (see the module docstring)."""

    def __init__(self, slots: SlotDevices, settings: UBootSettings) -> None:
        self.slots = slots
        self.settings = settings

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> UBootControl:
        settings = UBootSettings(
            fw_env_config=optional_str(options, "fw_env_config", "/etc/fw_env.config"),
            boot_part_var=optional_str(options, "boot_part_var", "mender_boot_part"),
            boot_part_hex_var=optional_str(options, "boot_part_hex_var", "mender_boot_part_hex"),
            partitions=PartitionMap.from_options(options),
            reboot_command=tuple(command_option(options, "reboot_command", ["reboot"])),
            reboot_wait_s=float(optional_int(options, "reboot_wait_s", 120)),
        )
        return cls(SlotDevices.from_options(options, "uboot"), settings)

    # ------------------------------------------------------------------ BootControl

    def status(self) -> BootStatus:
        return _status(self._read_env(), self.slots.booted_slot())

    def slot_size(self, slot: Slot) -> int:
        return self.slots.size(slot)

    def open_slot(self, slot: Slot) -> SlotSink:
        return open_inactive_slot(self.slots, self.status(), slot)

    def open_slot_for_read(self, slot: Slot) -> BinaryIO:
        return self.slots.open_for_read(slot)

    def mark_unbootable(self, slot: Slot) -> None:
        env = self._read_env()
        committed = _status(env, self.slots.booted_slot()).committed
        if slot == committed:
            raise BootControlError(f"slot {slot} is the committed slot; nothing would boot")
        if env.upgrade_available and env.boot_slot == slot:  # a pending or running trial
            self._set_env(self._boot_part_vars(committed) | _counter_vars(upgrade=False))

    def set_trial(self, slot: Slot) -> None:
        if slot == self.status().committed:
            raise BootControlError(f"slot {slot} is the committed slot; there is nothing to try")
        self._set_env(self._boot_part_vars(slot) | _counter_vars(upgrade=True))

    def mark_good(self) -> None:
        env = self._read_env()
        active = self.slots.booted_slot()
        if active != env.boot_slot:
            raise BootControlError(f"slot {active} was marked unbootable; it cannot be committed")
        if env.upgrade_available or env.bootcount:
            self._set_env(_counter_vars(upgrade=False))

    def reboot(self) -> None:
        reboot_and_wait(self.settings.reboot_command, self.settings.reboot_wait_s)

    # ------------------------------------------------------------------ the environment

    def _config_args(self) -> list[str]:
        return ["-c", self.settings.fw_env_config]

    def _read_env(self) -> UBootEnv:
        env = self._print_env()
        part_var = self.settings.boot_part_var
        if part_var not in env:
            raise BootControlError(f"the U-Boot environment has no {part_var}")
        return UBootEnv(
            boot_slot=self.settings.partitions.slot_of(env[part_var]),
            upgrade_available=env.get("upgrade_available", "0").strip() == "1",
            bootcount=_int_var(env, "bootcount", 0),
            bootlimit=_int_var(env, "bootlimit", 1),
        )

    def _print_env(self) -> dict[str, str]:
        return parse_assignments(run_tool(["fw_printenv", *self._config_args()]))

    def _set_env(self, values: Mapping[str, str]) -> None:
        """One `fw_setenv -s` write, then read back: the tool skips what it cannot parse."""
        script = "".join(f"{name}={value}\n" for name, value in values.items())
        run_tool(["fw_setenv", *self._config_args(), "-s", "-"], stdin=script)
        stored = self._print_env()
        skipped = sorted(name for name, value in values.items() if stored.get(name, "") != value)
        if skipped:
            raise BootControlError(f"fw_setenv exited 0 but did not store {', '.join(skipped)}")

    def _boot_part_vars(self, slot: Slot) -> dict[str, str]:
        part = self.settings.partitions.part_of(slot)
        values = {self.settings.boot_part_var: str(part)}
        if self.settings.boot_part_hex_var:
            values[self.settings.boot_part_hex_var] = f"{part:x}"
        return values


def _counter_vars(*, upgrade: bool) -> dict[str, str]:
    return {"upgrade_available": "1" if upgrade else "0", "bootcount": "0"}


def _int_var(env: Mapping[str, str], name: str, default: int) -> int:
    """A counter as U-Boot's `setexpr` writes it and `itest` reads it: hexadecimal."""
    raw = env.get(name, f"{default:x}").strip()
    try:
        return int(raw, 16)
    except ValueError:
        raise BootControlError(f"U-Boot variable {name}={raw!r} is not a number") from None


def _status(env: UBootEnv, active: Slot) -> BootStatus:
    """The bootloader's view: pure, from the environment and the booted slot."""
    attempts = max(env.bootlimit - env.bootcount, 0)
    if not env.upgrade_available:
        # the boot part is committed; running anything else means it was marked bad
        return BootStatus(
            active=active, committed=env.boot_slot, trial=active != env.boot_slot, attempts_left=0
        )
    if active == env.boot_slot:  # running the trial
        return BootStatus(active=active, committed=active.other, trial=True, attempts_left=attempts)
    return BootStatus(
        active=active,
        committed=active,
        trial=False,
        attempts_left=attempts,
        pending_trial=env.boot_slot,
    )
