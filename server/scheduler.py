"""The rollout scheduler: a background thread that, every tick, evaluates the active staged
rollouts (advance, complete, or pause on a failing gate) and moves the weekly trains on time.

The clock is injected and `tick()` is public, so tests drive it without sleeping. Several
server replicas each run one, but only the leader's ticks (server.leadership); every step is
still a database transaction that re-reads the state, and the transitions are idempotent, so a
new leader picks up where the old one was and a stale one finds nothing left to do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from server.api_models import WorkerHealth
from server.leadership import Leadership
from server.publisher import Publisher
from server.services.rollouts import RolloutChange, evaluate_active
from server.services.train import TrainConfig, TrainMove, advance_all
from server.workers import TickLoop

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
        leadership: Leadership | None = None,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._train = train
        self._clock = clock
        self._loop = TickLoop(WORKER, self.tick, interval_s=interval_s, leadership=leadership)

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
        """Tick every `interval_s` in a thread that survives any failing tick (0: off)."""
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def health(self) -> WorkerHealth:
        return self._loop.health()
