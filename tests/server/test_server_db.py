"""The database layer on SQLite and PostgreSQL: migrations equal the models, and concurrent
copies of the same reports are stored once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from server.db import make_engine, make_sessions, upgrade_to_head
from server.errors import UnknownDeviceError
from server.models import Base, Device, Report
from server.schemas import EnrollRequest
from server.services.devices import enroll_device, is_silent
from server.services.reports import ingest_reports
from server.testing import MOSQUITTO_PIPE_LEAK, sample_report
from wire import ReportsAck, UpdateState

WRITERS = 6

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing


def test_migrations_build_exactly_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade_to_head(engine)
        upgrade_to_head(engine)  # at head: a no-op
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_concurrent_duplicate_reports_are_stored_once(db_url: str) -> None:
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    sessions = make_sessions(engine)
    try:
        with sessions() as session:
            request = EnrollRequest(
                enrollment_token="t", device_id="phone-1", model="sim", channel="stable"
            )
            enroll_device(session, request, "t")
        reports = [sample_report("phone-1", seq) for seq in range(20)]
        reports.append(sample_report("phone-1", 20, UpdateState.COMMITTED))
        acks: list[ReportsAck] = []
        barrier = threading.Barrier(WRITERS)

        def write() -> None:
            with sessions() as session:
                barrier.wait()
                acks.append(ingest_reports(session, "phone-1", reports, via="http"))

        threads = [threading.Thread(target=write) for _ in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert [a.acked for a in acks] == [tuple(range(21))] * WRITERS
        with sessions() as session:
            stored = session.scalar(select(func.count()).select_from(Report))
            device = session.get(Device, "phone-1")
        assert stored == 21
        assert device is not None
        assert (device.state, device.last_seq) == ("committed", 20)
    finally:
        engine.dispose()


def test_reports_of_an_unknown_device_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ota.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        with make_sessions(engine)() as session:
            with pytest.raises(UnknownDeviceError):
                ingest_reports(session, "ghost", [sample_report("ghost", 0)], via="mqtt")
            assert session.scalar(select(func.count()).select_from(Report)) == 0
    finally:
        engine.dispose()


def test_servers_starting_together_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def migrate() -> None:
        barrier.wait()
        try:
            upgrade_to_head(db_url)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []


def test_a_device_not_heard_within_the_report_timeout_is_silent() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    device = Device(device_id="phone-1", model="sim", channel="stable", enrolled_at=now)
    assert is_silent(device, now, 60) is True  # never heard
    device.last_seen = now - timedelta(seconds=30)
    assert is_silent(device, now, 60) is False
    device.last_seen, device.last_report_at = now - timedelta(hours=2), now - timedelta(seconds=5)
    assert is_silent(device, now, 60) is False
    assert is_silent(device, now + timedelta(minutes=2), 60) is True
