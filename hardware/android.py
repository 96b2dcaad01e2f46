"""Android A/B through the boot HAL (`bootctl`) and `update_engine_client`.

Android writes its slots itself: update_engine streams a payload into the inactive slot's
partitions and verifies it, so this backend has no `open_slot` (it raises) and adds
`apply_payload(url, offset, size, headers)` instead. The agent's install order still holds:

- mark bad   = `bootctl set-slot-as-unbootable N` (update_engine does this too before writing);
- write      = `update_engine_client --update --follow --payload=URL --offset=N --size=N
               --headers=...`, with `SWITCH_SLOT_ON_REBOOT=0` so the slot is not armed yet;
- trial      = `bootctl set-active-boot-slot N`: the bootloader gives the slot a number of
               tries (6, kActiveTries in AOSP's libboot_control) and falls back when they
               run out;
- commit     = `bootctl mark-boot-successful` (what update_verifier does on a healthy boot).

The committed slot is the running one once it is marked successful, otherwise the other one.
bootctl does not expose the tries left: a running trial reports 0, a pending one `tries`.

update_engine_client logs to stderr (brillo's kLogToStderr), and a payload applied without
switching slots completes with kUpdatedButNotActive (52), which it counts as success: both
as in AOSP's update_engine_client_android.cc, which the fake in hardware/fakes follows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardware.bootcontrol import BootControlError, BootStatus, PayloadProgress, Slot, SlotSink
from hardware.commands import follow_tool, reboot_and_wait, run_tool, tool_says_yes
from hardware.options import command_option, optional_int, optional_path

SLOT_NUMBER = {Slot.A: 0, Slot.B: 1}
DEFAULT_MAX_PAYLOAD = 8 * 1024**3
NO_SWITCH_HEADER = "SWITCH_SLOT_ON_REBOOT=0"
# What update_engine_client exits 0 on: applied and armed, or applied and not armed (ours).
APPLIED = ("ErrorCode::kSuccess", "ErrorCode::kUpdatedButNotActive")
ACTIVE_TRIES = 6
# Where AOSP's non-streaming A/B updates keep the package: update_engine may read it there.
DEFAULT_PAYLOAD_PATH = "/data/ota_package/update.zip"
STATUS_UPDATE = "onStatusUpdate("


@dataclass(frozen=True)
class AndroidSettings:
    bootctl: tuple[str, ...] = ("bootctl",)
    update_engine_client: tuple[str, ...] = ("update_engine_client",)
    reboot_command: tuple[str, ...] = ("reboot",)
    reboot_wait_s: float = 120.0
    apply_timeout_s: float = 3600.0
    max_payload_size: int = DEFAULT_MAX_PAYLOAD
    tries: int = ACTIVE_TRIES
    payload_path: Path = Path(DEFAULT_PAYLOAD_PATH)


class AndroidControl:
    """BootControl over Android's boot HAL and update_engine (see the module docstring)."""

    def __init__(self, settings: AndroidSettings) -> None:
        self.settings = settings

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AndroidControl:
        return cls(
            AndroidSettings(
                bootctl=tuple(command_option(options, "bootctl", ["bootctl"])),
                update_engine_client=tuple(
                    command_option(options, "update_engine_client", ["update_engine_client"])
                ),
                reboot_command=tuple(command_option(options, "reboot_command", ["reboot"])),
                reboot_wait_s=float(optional_int(options, "reboot_wait_s", 120)),
                apply_timeout_s=float(optional_int(options, "apply_timeout_s", 3600)),
                max_payload_size=optional_int(options, "max_payload_size", DEFAULT_MAX_PAYLOAD),
                tries=optional_int(options, "tries", ACTIVE_TRIES),
                payload_path=optional_path(options, "payload_path", DEFAULT_PAYLOAD_PATH),
            )
        )

    # ------------------------------------------------------------------ BootControl

    def status(self) -> BootStatus:
        current = self._current_slot()
        if self._committed_slot(current) != current:
            return BootStatus(active=current, committed=current.other, trial=True, attempts_left=0)
        armed = self._slot_of(self._bootctl("get-active-boot-slot"))
        pending = armed if armed != current and self._slot_is("is-slot-bootable", armed) else None
        return BootStatus(
            active=current,
            committed=current,
            trial=False,
            attempts_left=self.settings.tries if pending else 0,
            pending_trial=pending,
        )

    def slot_size(self, slot: Slot) -> int:
        """The largest payload this device accepts (the partitions are update_engine's)."""
        return self.settings.max_payload_size

    def open_slot(self, slot: Slot) -> SlotSink:
        raise BootControlError(
            "Android applies payloads itself: use apply_payload(url, offset, size, headers) "
            "instead of writing the slot"
        )

    def mark_unbootable(self, slot: Slot) -> None:
        if slot == self._committed_slot(self._current_slot()):
            raise BootControlError(f"slot {slot} is the committed slot; nothing would boot")
        self._bootctl("set-slot-as-unbootable", str(SLOT_NUMBER[slot]))

    def set_trial(self, slot: Slot) -> None:
        if slot == self._committed_slot(self._current_slot()):
            raise BootControlError(f"slot {slot} is the committed slot; there is nothing to try")
        self._bootctl("set-active-boot-slot", str(SLOT_NUMBER[slot]))

    def mark_good(self) -> None:
        current = self._current_slot()
        if not self._slot_is("is-slot-bootable", current):
            raise BootControlError(f"slot {current} was marked unbootable; it cannot be committed")
        self._bootctl("mark-boot-successful")

    def reboot(self) -> None:
        reboot_and_wait(self.settings.reboot_command, self.settings.reboot_wait_s)

    # ------------------------------------------------------------------ update_engine

    def staging_path(self) -> Path:
        """Where the agent puts the verified OTA package (`payload_path`)."""
        return self.settings.payload_path

    def apply_payload(
        self,
        url: str,
        offset: int,
        size: int,
        headers: list[str],
        progress: PayloadProgress | None = None,
    ) -> None:
        """Have update_engine write the payload at `url` into the inactive slot and verify it.

        `headers` are payload_properties.txt lines (FILE_HASH=..., METADATA_SIZE=...). Blocks
        until update_engine reports the outcome, telling `progress` each status update on
        the way; any failure raises BootControlError with update_engine's error code.
        """
        if offset < 0 or size <= 0:
            raise BootControlError(f"bad payload range: offset={offset} size={size}")
        argv = self._payload_command(url, offset, size, [*headers, NO_SWITCH_HEADER])

        def heard(line: str) -> None:
            update = status_update(line)
            if update is not None and progress is not None:
                progress(*update)

        output = follow_tool(argv, heard, timeout=self.settings.apply_timeout_s)
        outcome = completion_code(output)
        if outcome not in APPLIED:
            raise BootControlError(f"update_engine did not apply the payload: {outcome}")

    def _payload_command(
        self, url: str, offset: int, size: int, headers: Sequence[str]
    ) -> list[str]:
        return [
            *self.settings.update_engine_client,
            "--update",
            "--follow",
            f"--payload={url}",
            f"--offset={offset}",
            f"--size={size}",
            "--headers=" + "\n".join(headers),
        ]

    # ------------------------------------------------------------------ bootctl

    def _bootctl(self, *args: str) -> str:
        return run_tool([*self.settings.bootctl, *args]).strip()

    def _slot_is(self, question: str, slot: Slot) -> bool:
        return tool_says_yes([*self.settings.bootctl, question, str(SLOT_NUMBER[slot])])

    def _committed_slot(self, current: Slot) -> Slot:
        """The running slot once it is marked successful; until then the other one."""
        return current if self._slot_is("is-slot-marked-successful", current) else current.other

    def _current_slot(self) -> Slot:
        return self._slot_of(self._bootctl("get-current-slot"))

    @staticmethod
    def _slot_of(number: str) -> Slot:
        for slot, value in SLOT_NUMBER.items():
            if number == str(value):
                return slot
        raise BootControlError(f"bootctl names slot {number!r}; only 0 and 1 are A/B slots")


def completion_code(output: str) -> str:
    """The error code of update_engine_client's `onPayloadApplicationComplete(...)` line."""
    marker = "onPayloadApplicationComplete("
    for line in reversed(output.splitlines()):
        if marker in line:
            return line.split(marker, 1)[1].split()[0].rstrip(")")
    raise BootControlError("update_engine_client ended without reporting the payload's outcome")


def status_update(line: str) -> tuple[str, float] | None:
    """`("UPDATE_STATUS_DOWNLOADING", 0.4)` from update_engine_client's
    `onStatusUpdate(UPDATE_STATUS_DOWNLOADING (3), 0.4)` line; None for any other line."""
    if STATUS_UPDATE not in line:
        return None
    inside = line.split(STATUS_UPDATE, 1)[1].rsplit(")", 1)[0]
    name, _, fraction = inside.rpartition(",")
    try:
        return name.split()[0], float(fraction)
    except (IndexError, ValueError):
        return None
