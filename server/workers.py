"""Background workers that outlive any one bad tick, and what `GET /health` says of them.

A `TickLoop` runs one function every interval in its own thread. Whatever a tick raises is
logged with its traceback, counted, and the loop goes on: a bug in one rollout, a stored value
nobody expected or a full disk must not end rollouts, re-signing or report ingestion for good.

Work that must happen once across server replicas takes a `Leadership` (server.leadership):
a replica that does not lead skips the tick, and `/health` says which replica leads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from server.api_models import WorkerHealth
from server.leadership import Leadership
from server.metrics import process_metrics

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@runtime_checkable
class HealthSource(Protocol):
    """What /health asks each background worker."""

    def health(self) -> WorkerHealth: ...


@dataclass
class TickCounts:
    """What one worker did: ticks run, ticks that raised, the last of each. Thread-safe
    enough: each field is written by the worker's one thread, read by /health."""

    name: str
    ticks: int = 0
    failures: int = 0
    standby: int = 0  # ticks skipped: another replica leads this work
    last_run: datetime | None = None
    last_failure: str = ""

    def ran(self, at: datetime) -> None:
        process_metrics().worker_ticked(self.name)
        self.ticks += 1
        self.last_run = at

    def failed(self, exc: BaseException) -> None:
        process_metrics().worker_failed(self.name)
        self.failures += 1
        self.last_failure = f"{type(exc).__name__}: {exc}"[:500]

    def view(self, *, alive: bool, refused: int = 0, leading: bool | None = None) -> WorkerHealth:
        return WorkerHealth(
            name=self.name,
            alive=alive,
            leading=leading,
            standby=self.standby,
            ticks=self.ticks,
            failures=self.failures,
            refused=refused,
            last_run=self.last_run,
            last_failure=self.last_failure,
        )


class TickLoop:
    """Call `tick` now and then every `interval_s` until stopped (0: never start); with a
    `leadership`, only while this replica leads (ticks skipped meanwhile are not counted)."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], object],
        *,
        interval_s: float,
        first_wait: bool = True,
        clock: Callable[[], datetime] = utc_now,
        leadership: Leadership | None = None,
    ) -> None:
        self.counts = TickCounts(name)
        self._leadership = leadership
        self._leading = False
        self._tick = tick
        self._interval_s = interval_s
        self._first_wait = first_wait
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """One tick; False (logged, counted) when it raised anything at all. A replica that
        does not lead skips it (True: nothing failed)."""
        if self._leadership is not None:
            self._leading = self._leadership.leads()
            if not self._leading:
                self.counts.standby += 1
                return True
        try:
            self._tick()
        except Exception as exc:  # a worker outlives any one tick: logged, counted, on /health
            log.exception("%s: a tick failed; trying again next tick", self.counts.name)
            self.counts.failed(exc)
            return False
        finally:
            self.counts.ran(self._clock())
        return True

    def start(self) -> None:
        if self._interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self.counts.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> WorkerHealth:
        leading = None if self._leadership is None else self._leading
        return self.counts.view(alive=self.alive, leading=leading)

    def _run(self) -> None:
        if not self._first_wait:
            self.run_once()
        while not self._stop.wait(self._interval_s):
            self.run_once()
