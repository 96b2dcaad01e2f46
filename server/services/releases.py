"""Releases and their rollouts: which signed build each channel+model should run.

The server never decides *what is valid* (TUF does); it stores which release is current for
a channel and model, and the rollout (id, percentage, paused) devices compare their bucket to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.api_models import Release as ReleaseView
from server.errors import ConflictError, NotFoundError
from server.models import Release, Rollout, utcnow
from server.schemas import ReleaseIn, RolloutUpdate
from server.services.views import each_view
from wire import AvailabilityNotice


@dataclass(frozen=True)
class RegisteredRelease:
    release: ReleaseView
    notice: AvailabilityNotice  # to publish, retained, once the release is stored


def register_release(session: Session, body: ReleaseIn) -> RegisteredRelease:
    """Store a release and its first rollout; 409 if channel+model+version already exists."""
    if _find(session, body.channel, body.model, body.version) is not None:
        raise ConflictError(_exists(body))
    now = utcnow()
    release = Release(**body.model_dump(exclude={"percentage"}), created_at=now)
    session.add(release)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request stored the same release first
        session.rollback()
        raise ConflictError(_exists(body)) from None
    rollout = Rollout(
        rollout_id=uuid.uuid4().hex,
        release_id=release.id,
        percentage=body.percentage,
        paused=False,
        ring="",
        created_at=now,
    )
    session.add(rollout)
    session.commit()
    return RegisteredRelease(release_view(release, rollout), make_notice(release, rollout))


@dataclass(frozen=True)
class UpdatedRollout:
    release: ReleaseView
    notice: AvailabilityNotice | None  # the channel's current notice, to publish again


def update_rollout(session: Session, rollout_id: str, update: RolloutUpdate) -> UpdatedRollout:
    """Change a rollout's percentage or paused flag.

    The notice to publish is the channel's *current* one: changing the rollout of an older
    release must not put that release back on the retained topic."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFoundError(f"no rollout {rollout_id!r}")
    if update.percentage is not None:
        rollout.percentage = update.percentage
    if update.paused is not None:
        rollout.paused = update.paused
    release = session.get_one(Release, rollout.release_id)
    session.commit()
    notice = current_notice(session, release.channel, release.model)
    return UpdatedRollout(release_view(release, rollout), notice)


def _exists(body: ReleaseIn) -> str:
    return f"release {body.version} for {body.channel}/{body.model} exists already"


def _find(session: Session, channel: str, model: str, version: str) -> Release | None:
    return session.scalar(
        select(Release).where(
            Release.channel == channel, Release.model == model, Release.version == version
        )
    )


def make_notice(release: Release, rollout: Rollout) -> AvailabilityNotice:
    return AvailabilityNotice(
        release_version=release.version,
        target_path=release.target_path,
        channel=release.channel,
        model=release.model,
        rollout_id=rollout.rollout_id,
        percentage=rollout.percentage,
        ring=rollout.ring,
        notes=release.notes,
        paused=rollout.paused,
    )


def _latest_first() -> tuple[Any, ...]:
    return (Release.release_counter.desc(), Release.published_at.desc(), Release.id.desc())


def _current_rollout(session: Session, release: Release) -> Rollout | None:
    return session.scalar(
        select(Rollout)
        .where(Rollout.release_id == release.id)
        .order_by(Rollout.created_at.desc(), Rollout.rollout_id)
        .limit(1)
    )


def current_notice(session: Session, channel: str, model: str) -> AvailabilityNotice | None:
    """The notice for the latest release on channel+model, or None if there is none."""
    release = session.scalar(
        select(Release)
        .where(Release.channel == channel, Release.model == model)
        .order_by(*_latest_first())
        .limit(1)
    )
    if release is None:
        return None
    rollout = _current_rollout(session, release)
    return None if rollout is None else make_notice(release, rollout)


def current_notices(session: Session) -> list[AvailabilityNotice]:
    """The current notice of every channel+model that has a release (to re-publish)."""
    pairs = session.execute(select(Release.channel, Release.model).distinct()).all()
    notices = (current_notice(session, channel, model) for channel, model in pairs)
    return [n for n in notices if n is not None]


def release_view(release: Release, rollout: Rollout | None) -> ReleaseView:
    return ReleaseView(
        id=release.id,
        version=release.version,
        channel=release.channel,
        model=release.model,
        target_path=release.target_path,
        length=release.length,
        sha256=release.sha256,
        notes=release.notes,
        published_at=release.published_at,
        release_counter=release.release_counter,
        created_at=release.created_at,
        rollout_id=rollout.rollout_id if rollout else None,
        percentage=rollout.percentage if rollout else None,
        paused=rollout.paused if rollout else None,
    )


def list_releases(session: Session) -> list[ReleaseView]:
    releases = session.scalars(
        select(Release).order_by(Release.channel, Release.model, *_latest_first())
    )
    return each_view(releases, lambda r: release_view(r, _current_rollout(session, r)), "release")
