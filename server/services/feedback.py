"""Tester feedback: reports grouped by problem and build, votes, blocking marks, and the
ranked list of what surfaces first (the pure part is `server.surfacing`).

`open_blocking_issues` is what the rollout gate asks: a build with an open group marked
blocking does not move on (docs/testers.md)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.api_models import FeedbackGroup as GroupView
from server.api_models import FeedbackReceipt, RankedGroup, Surfacing, VoteCount
from server.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    UnknownDeviceError,
)
from server.models import Device, Feedback, FeedbackGroup, FeedbackVote, Release, Report, utcnow
from server.surfacing import GroupStats, agent_signature, best_group, rank
from wire import FailureReason, UpdateState

MAX_LOG_BYTES: Final = 64 * 1024  # a log excerpt larger than this is refused (413)
TESTER: Final = "tester"
AGENT: Final = "agent"
TITLE_CHARS: Final = 120
SAMPLES: Final = 3
# Agent reports that say a build failed on a device; a policy deferral or a cancel does not.
FAILED_STATES: Final = (UpdateState.FAILED.value, UpdateState.ROLLED_BACK.value)
# Reasons that say nothing about the build: the owner's policy, a cancel, or a build offered to
# a device of another channel or model (refused by the agent, as it should be).
NOT_PROBLEMS: Final = (
    "",
    FailureReason.POLICY.value,
    FailureReason.CANCELLED.value,
    FailureReason.WRONG_CHANNEL.value,
    FailureReason.WRONG_MODEL.value,
)


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


# ---------------------------------------------------------------------- feedback and votes


@dataclass(frozen=True)
class FeedbackIn:
    build: str
    text: str
    author: str  # "<role>:<subject>", who sent it
    category: str = ""
    device_id: str | None = None
    logs: str | None = None


def submit_feedback(
    session: Session, item: FeedbackIn, *, now: datetime | None = None
) -> FeedbackReceipt:
    """Store one report; it joins the open tester group of its build with the most similar
    text, or starts a group of its own."""
    if item.logs is not None and len(item.logs.encode()) > MAX_LOG_BYTES:
        raise TooLargeError(f"the log excerpt is larger than {MAX_LOG_BYTES} bytes")
    if item.device_id is not None and session.get(Device, item.device_id) is None:
        raise UnknownDeviceError(f"no device {item.device_id!r} has enrolled")
    now = now or utcnow()
    group = _group_for(session, item, now)
    group.last_seen = now
    row = Feedback(
        group_id=group.id,
        build=item.build,
        text=item.text,
        category=item.category,
        device_id=item.device_id,
        author=item.author,
        logs=item.logs,
        created_at=now,
    )
    session.add(row)
    session.commit()
    return FeedbackReceipt(
        id=row.id, group_id=group.id, build=item.build, logs_stored=bool(row.logs)
    )


def _group_for(session: Session, item: FeedbackIn, now: datetime) -> FeedbackGroup:
    members: dict[int, list[str]] = defaultdict(list)
    rows = session.execute(
        select(Feedback.group_id, Feedback.text)
        .join(FeedbackGroup, FeedbackGroup.id == Feedback.group_id)
        .where(
            FeedbackGroup.build == item.build,
            FeedbackGroup.kind == TESTER,
            FeedbackGroup.closed.is_(False),
        )
    )
    for group_id, text in rows:
        members[group_id].append(text)
    found = best_group(item.text, members)
    if found is not None:
        return session.get_one(FeedbackGroup, found)
    group = FeedbackGroup(
        build=item.build,
        kind=TESTER,
        signature=f"text:{uuid.uuid4().hex}",
        title=item.text[:TITLE_CHARS],
        category=item.category,
        blocking=False,
        blocking_reason="",
        closed=False,
        created_at=now,
        last_seen=now,
    )
    session.add(group)
    session.flush()
    return group


def _open_group(session: Session, group_id: int) -> FeedbackGroup:
    group = session.get(FeedbackGroup, group_id)
    if group is None:
        raise NotFoundError(f"no feedback group {group_id}")
    return group


def vote(session: Session, group_id: int, voter: str) -> VoteCount:
    """One vote per tester per group; a second one is a 409."""
    group = _open_group(session, group_id)
    if group.closed:
        raise ConflictError(f"feedback group {group_id} is closed")
    session.add(FeedbackVote(group_id=group_id, voter=voter, created_at=utcnow()))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"you have voted for feedback group {group_id} already") from None
    return VoteCount(group_id=group_id, votes=_votes(session, [group_id]).get(group_id, 0))


def mark_blocking(session: Session, group_id: int, *, blocking: bool, reason: str) -> GroupView:
    """Blocking holds the gate of the group's build while the group is open."""
    group = _open_group(session, group_id)
    if blocking and not reason.strip():
        raise InvalidInputError("say why the group blocks the build (reason)")
    group.blocking = blocking
    group.blocking_reason = reason.strip()
    session.commit()
    return group_view(group)


def close_group(session: Session, group_id: int) -> GroupView:
    """Fixed or not a problem: a closed group neither ranks nor blocks."""
    group = _open_group(session, group_id)
    group.closed = True
    session.commit()
    return group_view(group)


def _group_fields(group: FeedbackGroup) -> dict[str, Any]:
    return {
        "group_id": group.id,
        "build": group.build,
        "kind": group.kind,
        "title": group.title,
        "category": group.category,
        "blocking": group.blocking,
        "blocking_reason": group.blocking_reason,
        "closed": group.closed,
        "last_seen": group.last_seen,
    }


def group_view(group: FeedbackGroup) -> GroupView:
    return GroupView(**_group_fields(group))


def _votes(session: Session, group_ids: Iterable[int]) -> dict[int, int]:
    rows = session.execute(
        select(FeedbackVote.group_id, func.count())
        .where(FeedbackVote.group_id.in_(list(group_ids)))
        .group_by(FeedbackVote.group_id)
    )
    return {group_id: int(n) for group_id, n in rows}


# ---------------------------------------------------------------------- what surfaces first


@dataclass
class _Evidence:
    devices: set[str] = field(default_factory=set)
    reports: int = 0
    samples: list[str] = field(default_factory=list)
    last: datetime | None = None

    def add(self, device: str, when: datetime, sample: str) -> None:
        self.devices.add(device)
        self.reports += 1
        if sample and len(self.samples) < SAMPLES:
            self.samples.append(sample)
        self.last = when if self.last is None else max(self.last, when)


def surfacing(session: Session, build: str, *, now: datetime | None = None) -> Surfacing:
    """The open groups of `build`, ranked (server.surfacing), with what they count."""
    now = now or utcnow()
    evidence: dict[int, _Evidence] = defaultdict(_Evidence)
    evidence.update(_agent_evidence(session, build, now))
    groups = session.scalars(
        select(FeedbackGroup).where(FeedbackGroup.build == build, FeedbackGroup.closed.is_(False))
    ).all()
    evidence.update(_tester_evidence(session, [g.id for g in groups if g.kind == TESTER]))
    votes = _votes(session, [g.id for g in groups])
    by_id = {g.id: g for g in groups}
    stats = [
        GroupStats(g.id, len(evidence[g.id].devices), votes.get(g.id, 0), g.last_seen)
        for g in groups
    ]
    ranked = [
        RankedGroup(
            rank=place,
            **_group_fields(by_id[s.group_id]),
            devices=s.devices,
            reports=evidence[s.group_id].reports,
            votes=s.votes,
            score=round(score, 4),
            samples=evidence[s.group_id].samples,
        )
        for place, (s, score) in enumerate(rank(stats, now), start=1)
    ]
    return Surfacing(build=build, generated_at=now, groups=ranked)


def _tester_evidence(session: Session, group_ids: list[int]) -> dict[int, _Evidence]:
    evidence: dict[int, _Evidence] = defaultdict(_Evidence)
    rows = session.execute(
        select(
            Feedback.group_id,
            Feedback.device_id,
            Feedback.author,
            Feedback.created_at,
            Feedback.text,
        )
        .where(Feedback.group_id.in_(group_ids))
        .order_by(Feedback.id)
    )
    for group_id, device_id, author, created_at, text in rows:
        evidence[group_id].add(device_id or author, created_at, text)
    return evidence


def _agent_evidence(session: Session, build: str, now: datetime) -> dict[int, _Evidence]:
    """Failure reports about `build`, by signature; each signature gets its group (made here
    the first time it is seen, so it can be voted on and marked blocking)."""
    by_signature: dict[str, _Evidence] = defaultdict(_Evidence)
    rows = session.execute(
        select(Report.device_id, Report.reason, Report.detail, Report.received_at)
        .where(
            Report.target_version == build,
            Report.state.in_(FAILED_STATES),
            Report.reason.not_in(NOT_PROBLEMS),
        )
        .order_by(Report.id)
    )
    for device_id, reason, detail, received_at in rows:
        signature = agent_signature(reason, detail or {})
        by_signature[signature].add(device_id, received_at, str((detail or {}).get("problem", "")))
    ids = _ensure_agent_groups(session, build, by_signature, now)
    return {ids[sig]: ev for sig, ev in by_signature.items()}


def _ensure_agent_groups(
    session: Session, build: str, by_signature: dict[str, _Evidence], now: datetime
) -> dict[str, int]:
    if not by_signature:
        return {}
    rows = [
        {
            "build": build,
            "kind": AGENT,
            "signature": sig,
            "title": sig.replace(":", ": ", 1).rstrip(": "),
            "category": AGENT,
            "blocking": False,
            "blocking_reason": "",
            "closed": False,
            "created_at": now,
            "last_seen": ev.last or now,
        }
        for sig, ev in by_signature.items()
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(FeedbackGroup)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["build", "signature"])
    )
    groups = session.scalars(
        select(FeedbackGroup).where(
            FeedbackGroup.build == build, FeedbackGroup.signature.in_(list(by_signature))
        )
    ).all()
    for group in groups:
        last = by_signature[group.signature].last
        if last is not None and last > group.last_seen:
            group.last_seen = last
    session.commit()
    return {g.signature: g.id for g in groups}
