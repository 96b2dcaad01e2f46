"""Download progress in the log: one INFO line every few seconds, not one per piece."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger("agent.runner")

PROGRESS_EVERY_S: Final = 5.0


class DownloadProgress:
    """A `download_into(progress=...)` that logs how far the download got: at its first
    piece, then every `every_s` seconds at most (called from the slot writer's thread)."""

    def __init__(
        self,
        device_id: str,
        what: str,
        total: int,
        *,
        every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._device_id = device_id
        self._what = what
        self._total = max(total, 1)
        self._every_s = every_s
        self._clock = clock
        self._last: float | None = None  # the first call logs: the download has begun

    def __call__(self, in_place: int) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self._every_s:
            return
        self._last = now
        log.info(
            "%s: downloading %s: %d of %d bytes (%d%%)",
            *(self._device_id, self._what, in_place, self._total, 100 * in_place // self._total),
        )
