"""Background workers survive any exception in one tick: logged, counted, shown on /health,
and the next tick runs. Each failure comes in through a seam the worker already has (its
clock, its storage, a stored row nobody expected), not by patching the worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, insert

from lab.processes import live_server
from server.db import make_engine, make_sessions, upgrade_to_head
from server.models import Train, utcnow
from server.online_signing import OnlineRoleRenewer
from server.publisher import NoPublisher
from server.scheduler import RolloutScheduler
from server.services.train import TrainConfig
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK
from signing.storage import LocalStorage

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


class FailingFirst:
    """A clock that raises on its first `failures` calls (a bug in one tick), then tells time."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def __call__(self) -> datetime:
        if self.failures > 0:
            self.failures -= 1
            raise OverflowError("date value out of range")  # what a 1e20 s timeout raised
        return datetime.now(UTC)


def test_the_scheduler_thread_survives_failing_ticks(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ota.db'}")
    upgrade_to_head(engine)
    scheduler = RolloutScheduler(
        make_sessions(engine), NoPublisher(), TrainConfig(), interval_s=0.02, clock=FailingFirst(3)
    )
    scheduler.start()
    try:
        eventually(lambda: scheduler.health().ticks >= 5)
        health = scheduler.health()
    finally:
        scheduler.stop()
        engine.dispose()
    assert health.alive is True
    assert health.failures == 3
    assert "OverflowError" in health.last_failure
    assert health.last_run is not None


class BrokenStorage(LocalStorage):
    """A repository whose disk fails with an error signing does not expect."""

    def get_bytes(self, name: str) -> bytes | None:
        raise RuntimeError("the disk went away")

    def exists(self, name: str) -> bool:
        raise RuntimeError("the disk went away")


def test_online_signing_survives_a_failing_tick(tmp_path: Path) -> None:
    renewer = OnlineRoleRenewer(BrokenStorage(tmp_path), tmp_path, interval_s=0.02)
    renewer.start()
    try:
        eventually(lambda: renewer.health().failures >= 2)
        assert renewer.health().alive is True
    finally:
        renewer.stop()


def test_health_shows_a_scheduler_tick_broken_by_a_stored_row(tmp_path: Path) -> None:
    """A train row of a stage no code knows makes every tick raise; the server goes on and
    /health says so."""
    db_url = f"sqlite:///{tmp_path / 'ota.db'}"
    settings = Settings(db_url=db_url, rollout_tick_s=0.05)
    with live_server(settings) as url:
        engine = create_engine(db_url)
        with engine.begin() as conn:
            now = utcnow()
            conn.execute(
                insert(Train).values(
                    version="2026.48",
                    model="sim",
                    week_of="2026-11-23",
                    stage="bogus",
                    created_at=now,
                    updated_at=now,
                )
            )
        engine.dispose()

        def scheduler() -> dict[str, Any]:
            workers = httpx.get(f"{url}/health").json()["workers"]
            return next(w for w in workers if w["name"] == "rollout-scheduler")

        eventually(lambda: scheduler()["failures"] >= 2)
        after = scheduler()
        assert after["alive"] is True
        assert after["last_run"] is not None
        assert "bogus" in after["last_failure"]
