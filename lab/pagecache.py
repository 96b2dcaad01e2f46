"""A disk with a page cache, for power-cut runs: a cut loses every write and rename not synced.

`CachedDisk` is a `durable.Disk` (install it with `durable.using_disk`). Under the directories
it watches (`watch`), it keeps what a real disk keeps across a power cut:

- each file's synced content (its bytes and mode at its last fsync; a file created through the
  disk and never synced has none: it comes back empty, if its name comes back at all);
- each directory's synced entries (name -> file, or a subdirectory), taken at its last fsync:
  a create, rename or mkdir in it is lost until then, and so is a removal.

`cut(*roots)` is the power going: every watched directory under `roots` gets back its synced
entries, and every file in them its synced content; then what is left counts as synced. Writes
that never went through the disk (a test's own set-up, python-tuf's metadata cache, the
slots' raw writes) are what the page cache holds for those files: a later `cut` puts such a
file back as it was at the last sync the disk saw (or when watching began); a file the disk
never saw at all is left alone. Outside the watched roots every call goes straight to the OS.

The watched files are read into memory (at `watch`, at each fsync, at each cut): meant for a
lab's small images and journals. Linux only (an fd's path comes from /proc/self/fd).
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import durable

DIRECTORY: Final = -1  # an entry that is a subdirectory, not a file


@dataclass(frozen=True)
class Synced:
    """What a power cut leaves of one file."""

    data: bytes
    mode: int


class CachedDisk:
    """A `durable.Disk` with a page cache over the watched directories (module docstring)."""

    def __init__(self) -> None:
        self._os = durable.OsDisk()
        self._lock = threading.RLock()
        self._trees: dict[Path, CachedTree] = {}  # by watched root

    def watch(self, *roots: Path) -> None:
        """Keep a page cache under each root (a directory that exists); all of it is synced."""
        with self._lock:
            for root in map(_real, roots):
                self._trees[root] = CachedTree(root)

    def cut(self, *roots: Path) -> None:
        """The power went: what was not synced under the watched `roots` is lost."""
        with self._lock:
            for root in map(_real, roots):
                self._trees[root] = self._trees[root].after_cut()

    # ------------------------------------------------------------------ durable.Disk

    def create(self, path: Path, mode: int) -> int:
        fd = self._os.create(path, mode)
        self._note(path, lambda tree, where: tree.created(where, mode))
        return fd

    def fsync(self, fd: int) -> None:
        where = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not self._note(where, lambda tree, path: tree.synced_file(path, fd)):
            self._os.fsync(fd)

    def replace(self, source: Path, target: Path) -> None:
        self._os.replace(source, target)
        old = _real(source)
        self._note(target, lambda tree, new: tree.renamed(old, new))

    def fsync_dir(self, path: Path) -> None:
        if not self._note(path, CachedTree.synced_dir):
            self._os.fsync_dir(path)

    def mkdir(self, path: Path, mode: int) -> None:
        self._os.mkdir(path, mode)
        self._note(path, CachedTree.made_dir)

    def _note(self, path: Path, change: Callable[[CachedTree, Path], None]) -> bool:
        """Apply `change` to the tree `path` is watched in; False when it is in none."""
        where = _real(path)
        with self._lock:
            tree = next((self._trees[p] for p in (where, *where.parents) if p in self._trees), None)
            if tree is None:
                return False
            change(tree, where)
        return True


class CachedTree:
    """One watched root: what is synced in it, and what the disk knows it holds now."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: dict[Path, dict[str, int]] = {}  # a directory's synced entries
        self._synced: dict[int, Synced] = {}  # a file's synced content, by its number
        self._live: dict[Path, int] = {}  # what the disk knows each path to hold now
        self._numbers = itertools.count()
        self._take_as_synced(root)

    def after_cut(self) -> CachedTree:
        """Put back what was synced; a new tree, all of it synced, for the next power-on."""
        for directory in sorted(self._entries, key=lambda d: len(d.parts)):
            if directory.is_dir():
                self._restore_dir(directory)
        return CachedTree(self.root)

    def created(self, path: Path, mode: int) -> None:
        self._live[path] = self._remember(Synced(b"", mode))

    def synced_file(self, path: Path, fd: int) -> None:
        synced = Synced(path.read_bytes(), os.fstat(fd).st_mode & 0o7777)
        number = self._live.get(path)
        if number is None or number == DIRECTORY:
            self._live[path] = self._remember(synced)
        else:
            self._synced[number] = synced

    def renamed(self, old: Path, new: Path) -> None:
        for path in [p for p in self._live if p == old or p.is_relative_to(old)]:
            self._live[new / path.relative_to(old)] = self._live.pop(path)
        for path in [p for p in self._entries if p == old or p.is_relative_to(old)]:
            self._entries[new / path.relative_to(old)] = self._entries.pop(path)
        self._number_of(new)  # one the disk never saw counts as synced as it is

    def synced_dir(self, directory: Path) -> None:
        names = sorted(os.listdir(directory))
        self._entries[directory] = {name: self._number_of(directory / name) for name in names}

    def made_dir(self, directory: Path) -> None:
        self._live[directory] = DIRECTORY
        self._entries[directory] = {}

    def _remember(self, synced: Synced) -> int:
        number = next(self._numbers)
        self._synced[number] = synced
        return number

    def _take_as_synced(self, directory: Path) -> None:
        """Everything under `directory` as it is now counts as synced."""
        self._live[directory] = DIRECTORY
        self._entries[directory] = {}
        for entry in sorted(directory.iterdir()):
            self._entries[directory][entry.name] = self._number_of(entry)

    def _number_of(self, path: Path) -> int:
        """The file (or directory) at `path`, as the disk knows it; one it never saw is synced
        as it is now."""
        known = self._live.get(path)
        if known is not None:
            return known
        if path.is_dir():
            self._take_as_synced(path)
            return DIRECTORY
        number = self._remember(Synced(path.read_bytes(), path.stat().st_mode & 0o7777))
        self._live[path] = number
        return number

    def _restore_dir(self, directory: Path) -> None:
        synced = self._entries[directory]
        for name in os.listdir(directory):
            path = directory / name
            if name not in synced and path in self._live:
                _remove(path)  # made through the disk, its entry never synced
        for name, number in synced.items():
            if number == DIRECTORY:
                _restore_directory(directory / name)
            else:
                _restore_file(directory / name, self._synced[number])


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _restore_directory(path: Path) -> None:
    if path.is_dir():
        return
    _remove(path)
    path.mkdir()


def _restore_file(path: Path, synced: Synced) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    try:
        if path.read_bytes() == synced.data:
            return
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, synced.mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), synced.mode)
        out.write(synced.data)
