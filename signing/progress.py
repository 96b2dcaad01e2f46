"""How a long publish says how far it got: hashing the image, signing, uploading.

`publish_release` starts one task per step with its total (bytes, or steps for signing) and
advances it as the work goes; `ota release publish` draws the tasks as progress bars on
stderr (rich), tests record them. Stdlib only: the signing code does not draw anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Advance = Callable[[int], None]  # called with how many more units (bytes, steps) are done


BYTES = "bytes"
STEPS = "steps"


class Progress(Protocol):
    def task(self, description: str, total: int, unit: str = BYTES) -> Advance:
        """Start a task of `total` units (BYTES or STEPS); the callable returned advances it."""


def _ignore(_done: int) -> None:
    return None


class NoProgress:
    """Reports nothing (the default)."""

    def task(self, description: str, total: int, unit: str = BYTES) -> Advance:
        return _ignore
