"""A device request's authentication and its device row cost one query (issue 12: at fleet
scale the two token lookups and the row load were most of a request's database time), and the
one-query path refuses exactly what the full checks refuse."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.orm import Session, sessionmaker

from server.auth import device_of_credential
from server.db import make_engine, make_sessions, upgrade_to_head
from server.errors import ForbiddenError, NotAuthenticatedError
from server.models import DeviceToken, utcnow
from server.settings import Settings
from server.testing import KeyedDevice, enroll_in_session

ADMIN = "admin-secret"
FLEET = "fleet-secret"


@pytest.fixture
def db(db_url: str) -> Iterator[tuple[sessionmaker[Session], list[str], Settings]]:
    engine = make_engine(db_url)
    upgrade_to_head(engine)
    statements: list[str] = []

    def count(*args: Any) -> None:
        if not str(args[2]).startswith("BEGIN"):  # SQLite's transaction, not a query
            statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    yield make_sessions(engine), statements, Settings(db_url=db_url, admin_token=ADMIN)
    engine.dispose()


def enrolled(sessions: sessionmaker[Session], *device_ids: str) -> list[KeyedDevice]:
    with sessions() as session:
        devices = [enroll_in_session(session, d, "sim", "stable", FLEET) for d in device_ids]
        session.commit()
    return devices


def test_a_good_device_credential_costs_one_query(
    db: tuple[sessionmaker[Session], list[str], Settings],
) -> None:
    sessions, statements, settings = db
    (phone,) = enrolled(sessions, "phone-1")
    with sessions() as session:
        statements.clear()
        device = device_of_credential(session, settings, "phone-1", phone.token)
        assert (device.device_id, device.channel) == ("phone-1", "stable")
        assert len(statements) == 1, statements


def test_the_one_query_path_refuses_what_the_full_checks_refuse(
    db: tuple[sessionmaker[Session], list[str], Settings],
) -> None:
    sessions, _, settings = db
    phone, other = enrolled(sessions, "phone-1", "phone-2")
    refusals = [
        ("", NotAuthenticatedError),
        ("not-a-token", NotAuthenticatedError),
        (ADMIN, ForbiddenError),  # an admin cannot poll or report in a device's place
        (other.token, ForbiddenError),  # another device's credential
    ]
    for token, error in refusals:
        with sessions() as session, pytest.raises(error):
            device_of_credential(session, settings, "phone-1", token)
    with sessions() as session:  # an expired access token is unknown
        session.execute(update(DeviceToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    with sessions() as session, pytest.raises(NotAuthenticatedError):
        device_of_credential(session, settings, "phone-1", phone.token)
