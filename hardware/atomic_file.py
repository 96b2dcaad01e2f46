"""Replace a small file so that a power cut leaves either the old or the new content.

The recipe every boot environment here uses (and style.md habit 7): write a temp file in the
same directory, fsync it, `os.replace` it over the target, fsync the directory so the rename
itself is durable. `on_step` is called before each durable step; the simulated device passes
its fault plan there so a test can cut the power between any two of them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _no_fault(_name: str) -> None:
    return None


def write_atomically(
    path: Path, data: bytes, on_step: Callable[[str], None] = _no_fault, *, tag: str = "file"
) -> None:
    """Make `path` hold `data`, all or nothing. Step names are `<tag>.<step>`."""
    # A name of its own, so two writers in one directory never share a temp file.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        on_step(f"{tag}.write-temp")
        os.write(fd, data)
        on_step(f"{tag}.fsync-temp")
        os.fsync(fd)
    finally:
        os.close(fd)
    on_step(f"{tag}.replace")
    os.replace(temp, path)
    on_step(f"{tag}.fsync-dir")
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames and creations in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Drop temp files a power cut left next to `path` (they were never live). Call only at
    start-up, when no writer can be midway."""
    for temp in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
