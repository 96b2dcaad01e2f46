"""Once-only work has one leader among server replicas: a PostgreSQL advisory lock held on a
connection of its own, free again as soon as the holder's session ends; on SQLite the one
process leads."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from server.db import make_engine, make_sessions, upgrade_to_head
from server.leadership import AdvisoryLockLeader, SoleLeader, leadership_for
from server.publisher import NoPublisher
from server.scheduler import RolloutScheduler
from server.services.train import TrainConfig


def test_on_sqlite_the_one_process_leads(tmp_path: Path) -> None:
    assert isinstance(leadership_for(f"sqlite:///{tmp_path / 'ota.db'}"), SoleLeader)


@pytest.mark.postgres
def test_one_replica_leads_and_another_takes_over_when_its_session_ends(pg_url: str) -> None:
    first, second = AdvisoryLockLeader(pg_url), AdvisoryLockLeader(pg_url)
    try:
        assert first.leads()
        assert not second.leads()
        assert first.leads()  # still: the lock is held while the session lives
        end_sessions_holding_the_lock(pg_url)  # what a SIGKILLed replica's session does
        assert not first.leads()  # it notices and steps down
        assert second.leads()
        assert not first.leads()
        second.close()  # a clean stop frees it at once
        assert first.leads()
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
def test_a_replica_that_does_not_lead_skips_the_schedulers_ticks(pg_url: str) -> None:
    engine = make_engine(pg_url)
    upgrade_to_head(engine)
    leaders = [AdvisoryLockLeader(pg_url), AdvisoryLockLeader(pg_url)]
    schedulers = [
        RolloutScheduler(
            make_sessions(engine), NoPublisher(), TrainConfig(), interval_s=0, leadership=lead
        )
        for lead in leaders
    ]
    try:
        for _ in range(3):
            for scheduler in schedulers:
                scheduler._loop.run_once()
        healths = [s.health() for s in schedulers]
        assert [(h.ticks, h.leading) for h in healths] == [(3, True), (0, False)]
    finally:
        for lead in leaders:
            lead.close()
        engine.dispose()


def end_sessions_holding_the_lock(db_url: str) -> None:
    """Terminate them, and wait until PostgreSQL has ended them (it does so asynchronously)."""
    url = make_url(db_url).set(drivername="postgresql")
    held = "FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f"SELECT pg_terminate_backend(pid) {held}")  # constant
        for _ in range(500):
            row = conn.execute(f"SELECT count(*) {held}").fetchone()  # constant
            if row is not None and row[0] == 0:
                return
            time.sleep(0.01)
    raise AssertionError("the sessions holding the lock did not end")
