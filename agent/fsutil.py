"""Files that survive a power cut at any instant: old content or new, never a torn mix.

The recipe (style.md habit 7): write a temp file in the same directory, flush, fsync it,
`os.replace` it over the target, fsync the directory so the rename itself is durable. Temp
files get a unique name (`.<name>.<random>.tmp`), so two writers never share one, and a temp
file a power cut left behind is never mistaken for the real file: `remove_stale_temps` drops
them on the next start.

`on_step` is a test seam: it is called before the two steps that decide what a power cut
leaves, `<tag>.replace` (the temp file is written and synced, the target still old) and
`<tag>.fsync-dir` (the target renamed, the rename not yet synced); the names are those of
`hardware.atomic_file`. The simulated device's fault plan goes there, so a harness can cut
the power before or after the rename. (A cut while the temp file is being written leaves the
same as one before the rename: the old target and an unused temp file.)
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"

StepHook = Callable[[str], None]  # called with a step's name before it happens (tests cut there)


def no_step(_name: str) -> None:
    """The default `StepHook`: nothing happens between the steps."""


def atomic_write(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    on_step: StepHook = no_step,
    tag: str = "file",
) -> None:
    """Make `path` hold `data`, all or nothing; durable when this returns.

    The file is private by default (0600: journals, reports and credentials are the agent's
    own); pass `mode` for anything others may read. `on_step` and `tag`: the module docstring.
    """
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:  # also KeyboardInterrupt: never leave our temp file behind
        temp.unlink(missing_ok=True)
        raise
    on_step(f"{tag}.replace")  # a cut here leaves the temp file behind, as a real one does
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    on_step(f"{tag}.fsync-dir")
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make creations, renames and removals of entries in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create directory `path` (and parents) so that its existence is durable."""
    if path.is_dir():
        return
    ensure_dir(path.parent)
    path.mkdir(exist_ok=True)
    fsync_dir(path.parent)


def stale_temps(path: Path) -> list[Path]:
    """Temp files `atomic_write(path, ...)` may have left behind (they were never live)."""
    pattern = f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"
    return sorted(path.parent.glob(pattern))


def remove_stale_temps(path: Path) -> int:
    """Delete what `stale_temps` finds; returns how many. Safe only with no writer running."""
    temps = stale_temps(path)
    for temp in temps:
        temp.unlink(missing_ok=True)
    return len(temps)


def is_temp_name(name: str) -> bool:
    """True for the names `atomic_write` gives its temp files."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`; None when the file does not exist.

    Anything else that is wrong (not UTF-8, not JSON, not an object) raises ValueError, so
    the caller decides what a corrupt file means. Other I/O errors propagate as OSError.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    data = json.loads(raw)  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def move_aside(path: Path, label: str = "corrupt") -> Path:
    """Rename `path` to `<name>.<label>-<unix_ns>` (durably) so it is kept, not reused."""
    aside = path.with_name(f"{path.name}.{label}-{time.time_ns()}")
    os.replace(path, aside)
    fsync_dir(path.parent)
    return aside
