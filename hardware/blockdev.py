"""What every real backend shares about its body: two partitions and a kernel command line.

The partitions are block devices (plain files in tests); the running slot is the one whose
root device the kernel was booted with (`root=` in /proc/cmdline), the bootloader's own
statement of what it booted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from hardware.bootcontrol import BootControlError, BootStatus, Slot, SlotSink
from hardware.options import optional_int, optional_str, required_str


@dataclass(frozen=True)
class SlotDevices:
    devices: Mapping[Slot, Path]  # the partition of each slot
    roots: Mapping[Slot, str]  # the `root=` value the kernel gets when booting each slot
    cmdline_path: Path = Path("/proc/cmdline")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], backend: str) -> SlotDevices:
        devices = {s: Path(required_str(options, f"slot_{s.value}_device", backend)) for s in Slot}
        roots = {s: optional_str(options, f"slot_{s.value}_root", str(devices[s])) for s in Slot}
        cmdline = Path(optional_str(options, "cmdline_path", "/proc/cmdline"))
        return cls(devices=devices, roots=roots, cmdline_path=cmdline)

    def size(self, slot: Slot) -> int:
        """Capacity in bytes (seeking to the end works for block devices and files)."""
        try:
            fd = os.open(self.devices[slot], os.O_RDONLY)
        except OSError as exc:
            raise BootControlError(f"cannot open slot {slot} ({exc.strerror})") from None
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    def open(self, slot: Slot) -> SlotSink:
        try:
            return FileSlot(open(self.devices[slot], "r+b"))
        except OSError as exc:
            raise BootControlError(f"cannot open slot {slot} ({exc.strerror})") from None

    def open_for_read(self, slot: Slot) -> BinaryIO:
        try:
            return open(self.devices[slot], "rb")
        except OSError as exc:
            raise BootControlError(f"cannot open slot {slot} ({exc.strerror})") from None

    def booted_slot(self) -> Slot:
        """The slot whose root the kernel was given; BootControlError if neither."""
        try:
            words = self.cmdline_path.read_text().split()
        except OSError as exc:
            raise BootControlError(f"cannot read {self.cmdline_path}: {exc.strerror}") from None
        for slot, root in self.roots.items():
            if f"root={root}" in words:
                return slot
        raise BootControlError(f"{self.cmdline_path} names neither slot's root")


def open_inactive_slot(slots: SlotDevices, status: BootStatus, slot: Slot) -> SlotSink:
    """Open `slot` for writing unless the bootloader could boot it (running, committed, armed)."""
    if slot in (status.active, status.committed):
        raise BootControlError(f"slot {slot} is running or committed; refusing to write it")
    if status.pending_trial == slot:
        raise BootControlError(f"slot {slot} is armed for a trial; mark it unbootable first")
    return slots.open(slot)


class FileSlot:
    """A slot that is a block device or a plain file, as a `SlotSink`: `fsync()` is
    fsync(2) after a flush, `drop_written` is `posix_fadvise(POSIX_FADV_DONTNEED)`."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def read(self, size: int = -1, /) -> bytes:
        return self._file.read(size)

    def write(self, data: bytes | memoryview, /) -> int | None:
        return self._file.write(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self._file.seek(offset, whence)

    def flush(self) -> None:
        self._file.flush()

    def fsync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def drop_written(self, start: int, length: int) -> None:
        drop_from_page_cache(self._file.fileno(), start, length)

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> None:
        self.close()


def drop_from_page_cache(fd: int, start: int, length: int) -> None:
    """Ask the kernel to write `length` bytes at `start` back and drop them from the page
    cache (a hint, not a sync: the final fsync still decides durability)."""
    if sys.platform in ("darwin", "win32"):
        return  # no posix_fadvise there
    try:
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        return  # a hint the device may not take (a pipe, an odd filesystem)


@dataclass(frozen=True)
class PartitionMap:
    """Which partition number holds which slot (the numbers bootloaders speak in)."""

    a: int = 2
    b: int = 3

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PartitionMap:
        return cls(
            a=optional_int(options, "slot_a_part", 2), b=optional_int(options, "slot_b_part", 3)
        )

    def part_of(self, slot: Slot) -> int:
        return self.a if slot is Slot.A else self.b

    def slot_of(self, part: int | str) -> Slot:
        """The slot on partition `part`; BootControlError for any other value."""
        for slot in Slot:
            if str(part).strip() == str(self.part_of(slot)):
                return slot
        raise BootControlError(f"partition {part!r} is neither slot's partition")


def boot_once_status(active: Slot, committed: Slot, armed: Slot | None) -> BootStatus:
    """The status of a bootloader whose trial is a single boot (tryboot, GRUB's next_entry)."""
    if active != committed:
        return BootStatus(active=active, committed=committed, trial=True, attempts_left=0)
    pending = armed if armed != committed else None
    return BootStatus(
        active=active,
        committed=committed,
        trial=False,
        attempts_left=1 if pending else 0,
        pending_trial=pending,
    )
