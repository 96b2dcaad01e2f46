"""Tester feedback: reports grouped by problem and build, votes, blocking marks.

`open_blocking_issues` is what the rollout gate asks: a build with an open group marked
blocking does not move on (docs/testers.md)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.errors import NotFoundError
from server.models import FeedbackGroup, Release


def open_blocking_issues(session: Session, *, release_id: int) -> int:
    """How many open groups marked blocking the release's build has (any channel, any model:
    the build is its version). An unknown release is a NotFoundError."""
    release = session.get(Release, release_id)
    if release is None:
        raise NotFoundError(f"no release with id {release_id}")
    count = session.scalar(
        select(func.count())
        .select_from(FeedbackGroup)
        .where(
            FeedbackGroup.build == release.version,
            FeedbackGroup.blocking.is_(True),
            FeedbackGroup.closed.is_(False),
        )
    )
    return int(count or 0)
