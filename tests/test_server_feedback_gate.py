"""`open_blocking_issues`, the number the rollout gate reads, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from server.db import make_engine, make_sessions, upgrade_to_head
from server.errors import NotFoundError
from server.models import FeedbackGroup, Release, utcnow
from server.services.feedback import open_blocking_issues
from server.testing import MOSQUITTO_PIPE_LEAK

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing


def _release(version: str, channel: str) -> Release:
    now = utcnow()
    return Release(
        version=version,
        channel=channel,
        model="sim",
        target_path=f"sim/{channel}/{version}/r",
        length=1,
        sha256="ab" * 32,
        notes="",
        published_at=now,
        release_counter=1,
        created_at=now,
    )


def _group(build: str, signature: str, *, blocking: bool, closed: bool = False) -> FeedbackGroup:
    now = utcnow()
    return FeedbackGroup(
        build=build,
        kind="tester",
        signature=signature,
        title=signature,
        category="",
        blocking=blocking,
        blocking_reason="",
        closed=closed,
        created_at=now,
        last_seen=now,
    )


def test_only_open_blocking_groups_of_the_releases_build_count(db_url: str) -> None:
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    try:
        with make_sessions(engine)() as session:
            preview, stable, other = (
                _release("2026.48", "preview"),
                _release("2026.48", "stable"),
                _release("2026.47", "stable"),
            )
            session.add_all([preview, stable, other])
            session.add_all(
                [
                    _group("2026.48", "a", blocking=True),
                    _group("2026.48", "b", blocking=True, closed=True),
                    _group("2026.48", "c", blocking=False),
                    _group("2026.47", "d", blocking=False),
                ]
            )
            session.commit()
            assert open_blocking_issues(session, release_id=preview.id) == 1
            assert open_blocking_issues(session, release_id=stable.id) == 1  # same build
            assert open_blocking_issues(session, release_id=other.id) == 0
            with pytest.raises(NotFoundError):
                open_blocking_issues(session, release_id=other.id + 1000)
    finally:
        engine.dispose()
