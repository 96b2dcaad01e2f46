"""The device's body as the agent sees it: two slots and a bootloader that can try one.

One interface, one backend per boot mechanism (simulated, U-Boot env, Raspberry Pi tryboot,
GRUB env, Android update_engine), chosen by name from the agent's config. Modelled on RAUC's
bootchooser: the agent never talks to a bootloader directly.

The order the agent follows (RAUC's install order):
    mark_unbootable(inactive) -> write inactive via open_slot -> set_trial(inactive)
    -> reboot() -> (bootloader tries it) -> health check -> mark_good()  | or rollback
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable


class Slot(enum.StrEnum):
    A = "a"
    B = "b"

    @property
    def other(self) -> Slot:
        return Slot.B if self is Slot.A else Slot.A


@dataclass(frozen=True)
class BootStatus:
    """What the bootloader says about this boot."""

    active: Slot  # the slot running now
    committed: Slot  # the slot the bootloader falls back to
    trial: bool  # True while running a slot on trial (not yet marked good)
    attempts_left: int  # trial boots the bootloader still allows before falling back
    pending_trial: Slot | None = None  # armed for the next boot, not yet booted


class SlotSink(Protocol):
    """A slot opened for writing (`r+b` at offset 0, never truncated), as `open_slot` gives it.

    The calls a one-pass download makes, with the durability step its backend knows how to
    do: `fsync()` (a block device's fsync(2), the simulated device's fault-planned sync) and
    `drop_written(start, length)`, a hint that the range is written (start writing it back,
    drop it from the page cache) that may do nothing.
    """

    def read(self, size: int = -1, /) -> bytes: ...

    def write(self, data: bytes | memoryview, /) -> int | None: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def flush(self) -> None: ...

    def fsync(self) -> None: ...

    def drop_written(self, start: int, length: int) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> None: ...


class BootControlError(Exception):
    """The boot mechanism refused or failed (tool exit code, bad env, missing slot)."""


@runtime_checkable
class BootControl(Protocol):
    """What every boot backend provides. All methods are safe to call again after a crash."""

    def status(self) -> BootStatus:
        """The bootloader's view of the truth; the agent trusts it over its own journal."""
        ...

    def slot_size(self, slot: Slot) -> int:
        """Capacity of `slot` in bytes."""
        ...

    def open_slot(self, slot: Slot) -> SlotSink:
        """The slot opened for reading and writing (`r+b`, no truncation) at offset 0.

        Refuses the active slot. The caller must `mark_unbootable(slot)` first.
        """
        ...

    def mark_unbootable(self, slot: Slot) -> None:
        """Make sure the bootloader will not pick `slot` (before it is overwritten)."""
        ...

    def set_trial(self, slot: Slot) -> None:
        """Arm one trial boot of `slot` (boot counter / tryboot / boot-once)."""
        ...

    def mark_good(self) -> None:
        """Commit the running slot: the bootloader keeps it from now on."""
        ...

    def reboot(self) -> None:
        """Reboot. On hardware this does not return; the simulated device performs the
        bootloader's choice at once and returns, and the agent then starts again from its
        journal exactly as after a real boot."""
        ...


@runtime_checkable
class SlotReader(Protocol):
    """A backend that can open a slot for reading, the running one included: a delta is
    applied from the running slot's image (the source) into the other slot. A backend
    without it gets full images only."""

    def open_slot_for_read(self, slot: Slot) -> BinaryIO:
        """`slot` opened read-only (`rb`) at offset 0."""
        ...


# What an applier tells about its progress: update_engine's status name and a 0..1 fraction.
PayloadProgress = Callable[[str, float], None]


@runtime_checkable
class PayloadApplier(Protocol):
    """A backend whose platform writes the slot itself (Android's update_engine): instead of
    `open_slot`, the agent downloads and verifies the signed target into `staging_path()`
    and hands the payload's byte range in it to `apply_payload`, which writes and verifies
    the inactive slot. `set_trial` still arms the slot afterwards."""

    def staging_path(self) -> Path:
        """Where the agent keeps the verified package for the platform to read."""
        ...

    def apply_payload(
        self,
        url: str,
        offset: int,
        size: int,
        headers: list[str],
        progress: PayloadProgress | None = None,
    ) -> None:
        """Write and verify the payload into the inactive slot; BootControlError on failure.
        `progress(status, fraction)` hears each status update while it runs."""
        ...
