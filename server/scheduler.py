"""The rollout scheduler: a background thread that, every tick, evaluates the active staged
rollouts (advance, complete, or pause on a failing gate) and moves the weekly trains on time.

The clock is injected and `tick()` is public, so tests drive it without sleeping. Several
server replicas may each run one: every step is a database transaction that re-reads the
state, and the transitions are idempotent (a second replica finds nothing left to do).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from server.errors import ServiceError
from server.metrics import process_metrics
from server.publisher import Publisher
from server.services.rollouts import RolloutChange, evaluate_active
from server.services.train import TrainConfig, TrainMove, advance_all

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
WORKER = "rollout-scheduler"


def utc_clock() -> datetime:
    return datetime.now(UTC)


class RolloutScheduler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        publisher: Publisher,
        train: TrainConfig,
        *,
        interval_s: float,
        clock: Clock = utc_clock,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._train = train
        self._interval_s = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> tuple[list[RolloutChange], list[TrainMove]]:
        """One pass; returns what changed (and has been published)."""
        now = self._clock()
        with self._sessions() as session:
            changes = evaluate_active(session, now=now)
        with self._sessions() as session:
            moves = advance_all(session, self._train, now=now)
        for change in changes:
            if change.notice is not None:
                self._publisher.publish_notice(change.notice)
        for move in moves:
            self._publish_move(move)
        return changes, moves

    def _publish_move(self, move: TrainMove) -> None:
        if move.announcement is not None:
            self._publisher.publish_announcement(*move.announcement)
        if move.rollout is not None and move.rollout.notice is not None:
            self._publisher.publish_notice(move.rollout.notice)

    def start(self) -> None:
        if self._interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="rollout-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.tick()
            except (SQLAlchemyError, ServiceError):
                process_metrics().worker_failed(WORKER)
                log.exception("rollout scheduler tick failed; trying again next tick")
            else:
                process_metrics().worker_ticked(WORKER)
