"""The simulated device: two slot images and a bootloader environment in one directory.

A real backend (not a mock): the agent, the tests and the demo drive it through the
`BootControl` interface exactly as they would a board. Layout of `root`:

    slot_a.img, slot_b.img   sparse files of `slot_size` bytes (the two partitions)
    bootenv.json             the bootloader's environment (hardware.sim_env.BootEnv)
    health_failing           present = the simulated health check fails

The bootloader's rules live in `hardware.sim_env` (pure); `boot()` applies them and is what
happens at power-on: `reboot()` calls it, and a test harness calls it after a power cut.

Power-cut model (`FaultPlan`). Every durable step inside the device calls `plan.step(name)`:
each bootenv write (`durable.atomic_write`'s steps: `bootenv.write-temp`, `bootenv.fsync-temp`,
`bootenv.replace` before the rename, `bootenv.fsync-dir` after it), each write to a slot
(`slot.write`), each flush or fsync of a slot (`slot.flush`, `slot.fsync`). A plan armed for
step N raises `PowerCut` there; `PowerCut` derives from BaseException so no `except Exception`
in the code under test can swallow it. After the cut the plan stays "off": every later step
raises again, as a dead machine does nothing. Writes reach the disk in order, and a cut at a
slot write can tear it (the first half of that chunk lands). A cut before a bootenv rename
leaves no temp file: `durable` removes it on the way out of any failure, so the stale-temp
sweep in `boot()` is for real power cuts only. The harness then opens the root again with a new
`SimDevice` (a fresh process) and calls `boot()`. Every sync goes through `durable`'s disk, so
under the lab's `CachedDisk` (lab/pagecache.py) a cut also loses each slot write, bootenv write
and rename that was not synced yet, as a page cache does.

To enumerate the cut points of an action, run it once with `FaultPlan.recording()` and read
`plan.steps`; then run it again for each index N with `FaultPlan(cut_at=N)` (passed to the
constructor, or set as `device.faults`). `FaultPlan(cut_at=N, tear=False)` cuts cleanly.
`os.fsync(f.fileno())` on a slot is not a step of its own (the plan sees the `flush()` before
it); `SlotFile.fsync()` is.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import BinaryIO

import durable
from hardware.blockdev import drop_from_page_cache
from hardware.bootcontrol import BootControlError, BootStatus, Slot, SlotSink
from hardware.sim_env import (
    BootEnv,
    arm_trial,
    boot_status,
    commit_running,
    env_from_json,
    env_to_json,
    mark_slot_bad,
    power_on,
    provisioned_env,
)

ENV_FILE = "bootenv.json"
HEALTH_FLAG_FILE = "health_failing"


class PowerCut(BaseException):
    """The power went at a durable step. Only a test harness catches this."""

    def __init__(self, step: str, index: int) -> None:
        super().__init__(f"power cut at step {index} ({step})")
        self.step = step
        self.index = index


class FaultPlan:
    """Where the power goes. Records every step; cuts at step `cut_at` (0-based) if given."""

    def __init__(self, cut_at: int | None = None, *, tear: bool = True) -> None:
        self.cut_at = cut_at
        self.tear = tear
        self.steps: list[str] = []
        self.cut: PowerCut | None = None

    @classmethod
    def recording(cls) -> FaultPlan:
        """A plan that never cuts: run an action with it to learn its steps."""
        return cls(cut_at=None)

    def count_steps(self) -> int:
        return len(self.steps)

    @property
    def fired(self) -> bool:
        return self.cut is not None

    def step(self, name: str) -> None:
        """Called before each durable step; raises PowerCut at the planned one and after."""
        if self.cut is not None:
            raise PowerCut(name, len(self.steps))
        index = len(self.steps)
        self.steps.append(name)
        if index == self.cut_at:
            self.cut = PowerCut(name, index)
            raise self.cut


class SimDevice:
    """A file-backed A/B device implementing BootControl (see the module docstring)."""

    def __init__(self, root: Path, faults: FaultPlan | None = None) -> None:
        self.root = Path(root)
        self.faults = faults if faults is not None else FaultPlan.recording()
        if not self._env_path.exists():
            raise BootControlError(
                f"no simulated device at {self.root} (missing {ENV_FILE}): "
                "create it with `ota-agent sim provision --config AGENT.TOML`"
            )

    @classmethod
    def provision(
        cls,
        root: Path,
        *,
        slot_size: int = 64 * 1024 * 1024,
        max_attempts: int = 3,
        model: str = "sim",
    ) -> SimDevice:
        """Create a device: two sparse slots, slot a committed and running, b empty."""
        if slot_size <= 0:
            raise ValueError("slot_size must be positive")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        for slot in Slot:
            with open(root / f"slot_{slot.value}.img", "wb") as image:
                image.truncate(slot_size)
        env = provisioned_env(max_attempts, model)
        durable.atomic_write(root / ENV_FILE, env_to_json(env), mode=None, tag="bootenv")
        return cls(root)

    # ------------------------------------------------------------------ BootControl

    def status(self) -> BootStatus:
        return boot_status(self._read_env())

    def slot_size(self, slot: Slot) -> int:
        return self.slot_path(slot).stat().st_size

    def open_slot(self, slot: Slot) -> SlotSink:
        env = self._read_env()
        if slot == env.active:
            raise BootControlError(f"slot {slot} is running; refusing to open it for writing")
        if slot == env.committed:
            raise BootControlError(f"slot {slot} is the committed fallback; refusing to write it")
        if slot not in env.unbootable:
            raise BootControlError(f"mark slot {slot} unbootable before writing it")
        raw = open(self.slot_path(slot), "r+b", buffering=0)  # noqa: SIM115 (owned by SlotFile)
        return SlotFile(raw, self.slot_size(slot), self.faults)

    def open_slot_for_read(self, slot: Slot) -> BinaryIO:
        return open(self.slot_path(slot), "rb")

    def mark_unbootable(self, slot: Slot) -> None:
        self._update_env(mark_slot_bad(self._read_env(), slot))

    def set_trial(self, slot: Slot) -> None:
        self._update_env(arm_trial(self._read_env(), slot))

    def mark_good(self) -> None:
        env = self._read_env()
        committed = commit_running(env)
        if committed != env:
            self._update_env(committed)

    def reboot(self) -> None:
        self.boot()

    # ------------------------------------------------------------------ the simulation

    def boot(self) -> Slot:
        """Power-on: the bootloader picks a slot (spending a trial attempt) and boots it."""
        durable.remove_stale_temps(self._env_path)  # nothing else runs before the bootloader
        env = power_on(self._read_env())
        self._update_env(env)
        return env.active

    @property
    def boots(self) -> int:
        """How many times the device has booted since it was provisioned."""
        return self._read_env().boots

    @property
    def model(self) -> str:
        return self._read_env().model

    @property
    def health_failing(self) -> bool:
        return (self.root / HEALTH_FLAG_FILE).exists()

    @health_failing.setter
    def health_failing(self, failing: bool) -> None:
        flag = self.root / HEALTH_FLAG_FILE  # the switch is durable: a power cut keeps it
        if failing:
            durable.atomic_write(flag, b"the simulated health check is set to fail\n", mode=None)
        elif flag.exists():
            flag.unlink()
            durable.fsync_dir(self.root)

    def check_health(self) -> str | None:
        """A problem description while `health_failing` is set; None when healthy."""
        if self.health_failing:
            return f"simulated device {self.root.name}: health check switched to fail"
        return None

    def slot_path(self, slot: Slot) -> Path:
        return self.root / f"slot_{slot.value}.img"

    def read_env(self) -> BootEnv:
        """The raw bootloader environment (for tests and diagnostics)."""
        return self._read_env()

    @property
    def _env_path(self) -> Path:
        return self.root / ENV_FILE

    def _read_env(self) -> BootEnv:
        try:
            raw = self._env_path.read_bytes()
        except OSError as exc:
            raise BootControlError(f"cannot read {self._env_path}: {exc.strerror}") from None
        return env_from_json(raw)

    def _update_env(self, env: BootEnv) -> None:
        data = env_to_json(env)
        durable.atomic_write(
            self._env_path, data, mode=None, on_step=self.faults.step, tag="bootenv"
        )


class SlotFile(io.RawIOBase):
    """A slot opened for writing (a `SlotSink`): a block device's limits, and every write is a
    fault step.

    Writing past the end raises ENOSPC as a partition does. `fsync()` syncs through the plan;
    `os.fsync(f.fileno())` also works but is invisible to the plan.
    """

    def __init__(self, raw: io.FileIO, size: int, faults: FaultPlan) -> None:
        super().__init__()
        self._raw = raw
        self._size = size
        self._faults = faults

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._raw.readinto(buffer)

    def read(self, size: int = -1, /) -> bytes:
        return self._raw.read(size) or b""

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def truncate(self, size: int | None = None) -> int:
        raise OSError(errno.EINVAL, "a partition cannot be truncated")

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        if self._raw.tell() + len(chunk) > self._size:
            raise OSError(errno.ENOSPC, "write past the end of the slot")
        try:
            self._faults.step("slot.write")
        except PowerCut as cut:
            if self._faults.tear and cut is self._faults.cut:
                self._raw.write(chunk[: len(chunk) // 2])  # the cut tore this chunk
            raise
        self._write_all(chunk)
        return len(chunk)

    def _write_all(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            written = self._raw.write(view)
            view = view[written or 0 :]

    def flush(self) -> None:
        if self._raw.closed:
            return
        self._faults.step("slot.flush")

    def fsync(self) -> None:
        self._faults.step("slot.fsync")
        durable.fsync_file(self._raw.fileno())

    def drop_written(self, start: int, length: int) -> None:
        drop_from_page_cache(self._raw.fileno(), start, length)  # a hint: no fault step

    def close(self) -> None:
        # Closing promises nothing about durability, so it is not a fault step: and a close
        # after a power cut (a `with` block unwinding) must not raise again.
        if not self._raw.closed:
            self._raw.close()
        super().close()
