"""A simulated device keeps one chain of polls, as the agent has one loop whose wake-ups
(a connect, a subscription granted at last) bring the next poll forward: reconnecting a
fleet must not multiply its HTTP load, or the bench measures a load no real fleet makes."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

from lab.fleetsim import _Device, _Worker


class Recorded:
    """Stands in for the worker's HTTP thread pool: records what would run there."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, ...]] = []

    def submit(self, guarded: Callable[..., None], job: Callable[..., None], *args: Any) -> None:
        self.jobs.append((job.__name__, *args))


def worker_with(device: _Device) -> tuple[_Worker, Recorded]:
    worker = object.__new__(_Worker)  # the scheduling only: no processes, sockets or TUF
    pool = Recorded()
    worker.pool = pool  # type: ignore[assignment]
    worker.timers = []
    worker.timer_ids = itertools.count()
    worker.rng = random.Random(1)
    worker.devices = [device]
    return worker, pool


def due_now(worker: _Worker) -> None:
    worker.timers = [(0.0, i, job) for (_, i, job) in worker.timers]
    heapq.heapify(worker.timers)
    worker._run_due_timers()


def device() -> _Device:
    return _Device("dev-1", api=None, offline=False, unhealthy=False, version="1.0")  # type: ignore[arg-type]


def test_three_reconnects_make_one_poll_not_three() -> None:
    one = device()
    worker, pool = worker_with(one)
    for _ in range(3):
        worker._wake_device(one)
    due_now(worker)
    assert pool.jobs == [("_poll", one, 3)]


def test_a_wake_during_a_poll_keeps_its_own_next_poll() -> None:
    one = device()
    worker, pool = worker_with(one)
    worker._wake_device(one)
    due_now(worker)
    assert pool.jobs == [("_poll", one, 1)]
    worker._wake_device(one)  # while poll 1 runs over HTTP
    worker._next_poll(one, 1, 60.0)  # poll 1 ends: the wake's poll stands, not one in 60 s
    due_now(worker)
    assert pool.jobs[1:] == [("_poll", one, 2)]
    worker._next_poll(one, 2, 60.0)  # poll 2 ends, no wake: the next on the interval
    assert len(worker.timers) == 1
    due_now(worker)
    assert pool.jobs[2:] == [("_poll", one, 3)]
