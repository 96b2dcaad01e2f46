"""Durable files: after a power cut at any instant, a file holds its old content or its new
content, never a torn mix. The one place in the project that writes a file durably.

The recipe (docs/decisions/durable-writes.md), in `atomic_write` and its streaming variants:

1. create a temp file in the target's directory, under a name of its own
   (`.<name>.<random>.tmp`), so two writers never share one and a leftover is never mistaken
   for the real file;
2. write it, flush it, fsync it;
3. `os.replace` it over the target;
4. fsync the directory (opened with O_DIRECTORY) so the rename itself is durable.

Any failure before the rename, `KeyboardInterrupt` and other `BaseException`s included, removes
the temp file and leaves the target as it was. Only a real power cut leaves a temp file behind;
`remove_stale_temps` (or `remove_stale_temps_in`) drops those on the next start, before any
writer runs.

The step hook: `on_step` (a `StepHook`) is called with `<tag>.<step>` just before each durable
step, so a test can cut the power between any two of them. The steps, in order:

- `<tag>.write-temp`: the temp file exists, empty; the target is old;
- `<tag>.fsync-temp`: the temp file is written, not yet synced; the target is old;
- `<tag>.replace`: the temp file is synced; the target is old;
- `<tag>.fsync-dir`: the target is renamed into place, the rename not yet synced.

The disk seam: every operation whose durability matters (creating a file, fsync of a file or a
directory, a rename, a mkdir) goes through one `Disk`, the real OS (`OsDisk`) unless a test
swaps in another with `using_disk`. The lab's `CachedDisk` (lab/pagecache.py) is one: it keeps
a page cache, so a power cut loses every write and rename that was not synced. The real path
costs one method call per operation.

Standard library only: nothing here imports anything of ours; `hardware`, `agent`, `signing`
and `server` all write through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol

TEMP_SUFFIX: Final = ".tmp"
STEPS: Final = ("write-temp", "fsync-temp", "replace", "fsync-dir")  # in the order they happen
PRIVATE: Final = 0o600  # the default mode: journals, reports, credentials and keys
COPY_BUFFER: Final = 1024 * 1024

StepHook = Callable[[str], None]  # called with a step's name before it happens (tests cut there)
WriteTo = Callable[[BinaryIO], object]  # writes a file's content into the open temp file

_CREATE_EXCLUSIVE: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_UNMANAGED_MODE: Final = 0o644  # what `mode=None` creates, less the umask


class Disk(Protocol):
    """The operations durability rests on (the module docstring's disk seam)."""

    def create(self, path: Path, mode: int) -> int:
        """A new file at `path` (FileExistsError if one is there), open read-write; its fd."""
        ...

    def fsync(self, fd: int) -> None:
        """Make the data of the open file `fd` durable."""
        ...

    def replace(self, source: Path, target: Path) -> None:
        """Rename `source` over `target` (durable only once their directories are synced)."""
        ...

    def fsync_dir(self, path: Path) -> None:
        """Make the entries of directory `path` (creations, renames, removals) durable."""
        ...

    def mkdir(self, path: Path, mode: int) -> None:
        """Create directory `path` (durable only once its parent is synced)."""
        ...


class OsDisk:
    """The real disk: the OS calls themselves."""

    def create(self, path: Path, mode: int) -> int:
        return os.open(path, _CREATE_EXCLUSIVE, mode)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def mkdir(self, path: Path, mode: int) -> None:
        path.mkdir(mode=mode)


_disk: Disk = OsDisk()


def current_disk() -> Disk:
    """The disk every durable operation goes through now."""
    return _disk


@contextmanager
def using_disk(disk: Disk) -> Iterator[Disk]:
    """Send every durable operation through `disk` (in every thread) until the block ends."""
    global _disk
    before, _disk = _disk, disk
    try:
        yield disk
    finally:
        _disk = before


def no_step(_name: str) -> None:
    """The default `StepHook`: nothing happens between the steps."""


def step_names(tag: str) -> list[str]:
    """The names `on_step` sees for one write with `tag`, in order."""
    return [f"{tag}.{step}" for step in STEPS]


# --------------------------------------------------------------------------- atomic writes


def atomic_write(
    path: Path,
    data: bytes,
    *,
    mode: int | None = PRIVATE,
    on_step: StepHook = no_step,
    tag: str = "file",
) -> None:
    """Make `path` hold `data`, all or nothing; durable when this returns.

    `mode` is set exactly (the umask does not apply); the default keeps the file private.
    `mode=None` never chmods: the file is created 0644 less the umask, for filesystems that
    refuse chmod (a FAT boot partition). `on_step` and `tag`: the module docstring.
    """
    atomic_write_stream(path, lambda out: out.write(data), mode=mode, on_step=on_step, tag=tag)


def atomic_copy(
    path: Path,
    source: BinaryIO,
    *,
    mode: int | None = PRIVATE,
    on_step: StepHook = no_step,
    tag: str = "file",
) -> None:
    """`atomic_write` of everything left in the open file `source`, a buffer at a time."""
    atomic_write_stream(
        path,
        lambda out: shutil.copyfileobj(source, out, COPY_BUFFER),
        mode=mode,
        on_step=on_step,
        tag=tag,
    )


def atomic_write_stream(
    path: Path,
    write_to: WriteTo,
    *,
    mode: int | None = PRIVATE,
    on_step: StepHook = no_step,
    tag: str = "file",
) -> None:
    """`atomic_write` of whatever `write_to` writes into the temp file (opened for reading and
    writing, so it may seek and read back); for content too large to hold in memory."""
    fd, temp = _create_temp(path, mode)
    try:
        _fill_temp(fd, write_to, mode, on_step, tag)
        on_step(f"{tag}.replace")
        _disk.replace(temp, path)
    except BaseException:  # also KeyboardInterrupt: never leave our temp file behind
        temp.unlink(missing_ok=True)
        raise
    on_step(f"{tag}.fsync-dir")
    fsync_dir(path.parent)


def _create_temp(path: Path, mode: int | None) -> tuple[int, Path]:
    """A new, empty temp file next to `path`: private until its mode is set."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    create_mode = _UNMANAGED_MODE if mode is None else PRIVATE
    return _disk.create(temp, create_mode), temp


def _fill_temp(fd: int, write_to: WriteTo, mode: int | None, on_step: StepHook, tag: str) -> None:
    with os.fdopen(fd, "w+b") as out:
        if mode is not None:
            os.fchmod(out.fileno(), mode)
        on_step(f"{tag}.write-temp")
        write_to(out)
        out.flush()
        on_step(f"{tag}.fsync-temp")
        fsync_file(out.fileno())


# --------------------------------------------------------------------------- new files, renames


def create_file(path: Path, data: bytes, *, mode: int = PRIVATE) -> None:
    """Write `data` into a new file `path` (FileExistsError if one is there), synced along
    with its directory entry; on failure the file is removed again.

    Never over an existing file, but not all or nothing: a power cut midway can leave a short
    file. Use it where a later durable `replace` publishes the file (a staging folder, a
    `.new` name), never for a file readers use in place.
    """
    fd = _disk.create(path, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            fsync_file(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace(source: Path, target: Path) -> None:
    """`os.replace(source, target)` (a file or a directory), durable when this returns."""
    _disk.replace(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def move_aside(path: Path, label: str = "corrupt") -> Path:
    """Rename a torn or corrupt `path` to `<name>.<label>-<unix_ns>` (durably), so it is kept
    for a look later and never read again as the real file; returns the new path."""
    aside = path.with_name(f"{path.name}.{label}-{time.time_ns()}")
    replace(path, aside)
    return aside


# --------------------------------------------------------------------------- directories


def fsync_file(fd: int) -> None:
    """Make the data written to the open file `fd` durable."""
    _disk.fsync(fd)


def fsync_dir(path: Path) -> None:
    """Make creations, renames and removals of entries in directory `path` durable."""
    _disk.fsync_dir(path)


def ensure_dir(path: Path, *, mode: int = 0o777) -> None:
    """Create directory `path` (`mode` less the umask) and its missing parents, so that their
    existence is durable; nothing happens when it exists."""
    if path.is_dir():
        return
    ensure_dir(path.parent)
    with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
        _disk.mkdir(path, mode)
    fsync_dir(path.parent)


# --------------------------------------------------------------------------- after a power cut


def is_temp_name(name: str) -> bool:
    """True for the names this module gives its temp files."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def stale_temps(path: Path) -> list[Path]:
    """Temp files a power cut left behind while writing `path` (they were never live)."""
    prefix = f".{path.name}."
    return [temp for temp in stale_temps_in(path.parent) if temp.name.startswith(prefix)]


def stale_temps_in(directory: Path) -> list[Path]:
    """Temp files a power cut left behind in `directory`, for any target."""
    if not directory.is_dir():
        return []
    return sorted(entry for entry in directory.iterdir() if is_temp_name(entry.name))


def remove_stale_temps(path: Path) -> int:
    """Delete what `stale_temps(path)` finds; returns how many. Only with no writer running."""
    return _remove_all(stale_temps(path))


def remove_stale_temps_in(directory: Path) -> int:
    """Delete what `stale_temps_in` finds; returns how many. Only with no writer running."""
    return _remove_all(stale_temps_in(directory))


def _remove_all(paths: list[Path]) -> int:
    for path in paths:
        path.unlink(missing_ok=True)
    return len(paths)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`; None when the file does not exist.

    Anything else that is wrong (not UTF-8, not JSON, not an object) raises ValueError, so
    the caller decides what a corrupt file means (often: `move_aside`). Other I/O errors
    propagate as OSError.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    data = json.loads(raw)  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data
