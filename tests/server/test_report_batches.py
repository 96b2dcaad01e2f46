"""Batched report ingestion (MQTT's path) keeps HTTP's rules: each (device, seq) stored once,
whichever way and however often it comes; a report that breaks a rule is refused alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server.db import make_engine, make_sessions, upgrade_to_head
from server.errors import ConflictError, UnknownDeviceError
from server.models import Device, Report, utcnow
from server.services.reports import ingest_report_batch, ingest_reports
from server.testing import sample_report
from wire import UpdateState
from wire.bounds import MAX_SEQ_AHEAD


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    upgrade_to_head(engine)
    made = make_sessions(engine)
    with made() as session:
        for device_id in ("phone-a", "phone-b"):
            session.add(
                Device(device_id=device_id, model="sim", channel="stable", enrolled_at=utcnow())
            )
        session.commit()
    yield made
    engine.dispose()


def stored(sessions: sessionmaker[Session]) -> list[tuple[str, int, str]]:
    with sessions() as session:
        rows = session.execute(select(Report.device_id, Report.seq, Report.via))
        return sorted((d, s, v) for d, s, v in rows)


def test_a_report_sent_over_mqtt_and_http_and_twice_in_a_batch_is_stored_once(
    sessions: sessionmaker[Session],
) -> None:
    a0, a1, b0 = (
        sample_report("phone-a", 0),
        sample_report("phone-a", 1),
        sample_report("phone-b", 0),
    )
    with sessions() as session:
        outcome = ingest_report_batch(session, [a0, b0, a0, a1, b0], via="mqtt")
        session.commit()
    assert (outcome.stored, outcome.duplicates, outcome.refused) == (3, 0, [])
    with sessions() as session:  # the same again over MQTT: a broker redelivery
        again = ingest_report_batch(session, [a0, a1], via="mqtt")
        session.commit()
    assert (again.stored, again.duplicates) == (0, 2)
    with sessions() as session:  # and over HTTP: acked, not stored again
        assert ingest_reports(session, "phone-a", [a0, a1], via="http").acked == (0, 1)
    assert stored(sessions) == [
        ("phone-a", 0, "mqtt"),
        ("phone-a", 1, "mqtt"),
        ("phone-b", 0, "mqtt"),
    ]


def test_http_first_then_mqtt_is_stored_once(sessions: sessionmaker[Session]) -> None:
    report = sample_report("phone-b", 0)
    with sessions() as session:
        ingest_reports(session, "phone-b", [report], via="http")
    with sessions() as session:
        outcome = ingest_report_batch(session, [report], via="mqtt")
        session.commit()
    assert (outcome.stored, outcome.duplicates) == (0, 1)
    assert stored(sessions) == [("phone-b", 0, "http")]


def test_a_bad_report_is_refused_alone_and_the_device_moves_to_its_newest(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        ingest_reports(session, "phone-a", [sample_report("phone-a", 0)], via="http")
    different = sample_report("phone-a", 0, UpdateState.FAILED)
    far = sample_report("phone-b", MAX_SEQ_AHEAD + 5)
    ghost = sample_report("ghost", 0)
    newest = sample_report("phone-a", 2, UpdateState.COMMITTED)
    batch = [different, far, ghost, sample_report("phone-a", 1), newest]
    with sessions() as session:
        outcome = ingest_report_batch(session, batch, via="mqtt")
        session.commit()
    refused = {(r.device_id, r.seq): type(e) for r, e in outcome.refused}
    assert refused[("phone-a", 0)] is ConflictError
    assert refused[("ghost", 0)] is UnknownDeviceError
    assert ("phone-b", MAX_SEQ_AHEAD + 5) in refused
    assert outcome.stored == 2
    with sessions() as session:
        device = session.get_one(Device, "phone-a")
        assert (device.last_seq, device.state) == (2, "committed")
        assert session.scalar(select(func.count()).select_from(Report)) == 3
