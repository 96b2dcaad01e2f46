"""Staged rollouts over the database: create, count, evaluate, pause, resume, abort, override.

The rules live in `rollout_rules` (pure); this module reads the numbers, applies the decision
to the rollout row devices see (percentage, paused) and writes the audit trail. Every function
returns the channel's current notice when it changed, for the caller to publish retained: the
server never messages devices one by one to roll out.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.api_models import AuditEntry, GateNumbers, RolloutGates, RolloutStatus
from server.errors import ConflictError, InvalidInputError, NotFoundError
from server.models import Device, Release, Report, Rollout, RolloutAudit, RolloutPlan
from server.services.releases import current_notice
from server.services.rollout_rules import (
    DEFAULT_STUCK_TIMEOUT_S,
    DEFAULT_WAVES,
    Counts,
    Decision,
    GateConfig,
    GateResult,
    RolloutError,
    RolloutEvent,
    RolloutState,
    TimeWindow,
    check_waves,
    classify,
    decide,
    evaluate_gates,
    may_advance_now,
    next_state,
    rate_wait_s,
)
from server.services.staleness import TrustCheck, count_stale_devices
from server.services.views import each_view
from wire import AvailabilityNotice, FailureReason, UpdateState
from wire.rollout import in_rollout


@dataclass(frozen=True)
class RolloutSpec:
    """What a release engineer (or the train) asks for."""

    release_id: int
    waves: tuple[float, ...] = DEFAULT_WAVES
    gates: GateConfig = field(default_factory=GateConfig)
    windows: tuple[str, ...] = ()
    rate_per_minute: float = 0.0
    stuck_timeout_s: float = DEFAULT_STUCK_TIMEOUT_S
    ring: str = ""


@dataclass(frozen=True)
class RolloutChange:
    rollout: RolloutStatus
    notice: AvailabilityNotice | None  # the channel's current notice, to publish retained


def create_rollout(
    session: Session, spec: RolloutSpec, *, actor: str, now: datetime
) -> RolloutChange:
    """A new staged rollout of a release at its first wave; it becomes the channel's current."""
    release = session.get(Release, spec.release_id)
    if release is None:
        raise NotFoundError(f"no release with id {spec.release_id}")
    try:
        waves = check_waves(spec.waves)
        windows = [str(TimeWindow.parse(w)) for w in spec.windows]
    except RolloutError as exc:
        raise InvalidInputError(str(exc)) from None
    rollout = Rollout(
        rollout_id=uuid.uuid4().hex,
        release_id=release.id,
        percentage=waves[0],
        paused=False,
        ring=spec.ring or release.channel,
        created_at=_after_existing(session, release.id, now),
    )
    session.add(rollout)
    session.flush()
    session.add(
        RolloutPlan(
            rollout_id=rollout.rollout_id,
            waves=list(waves),
            wave_index=0,
            state=RolloutState.ACTIVE.value,
            gates=asdict(spec.gates),
            windows=windows,
            rate_per_minute=spec.rate_per_minute,
            stuck_timeout_s=spec.stuck_timeout_s,
            wave_started_at=now,
            paused_reason="",
            paused_gate="",
            last_numbers={},
            updated_at=now,
        )
    )
    _audit(session, rollout.rollout_id, actor, "create", "", {"waves": list(waves)}, now)
    return _commit(session, rollout, now)


def _after_existing(session: Session, release_id: int, now: datetime) -> datetime:
    """`now`, or just after the release's newest rollout: the new one must be the current."""
    newest = session.scalar(
        select(func.max(Rollout.created_at)).where(Rollout.release_id == release_id)
    )
    if newest is None:
        return now
    newest = newest.replace(tzinfo=UTC) if newest.tzinfo is None else newest
    return max(now, newest + timedelta(microseconds=1))


# --------------------------------------------------------------------------- counting


def rollout_counts(session: Session, rollout: Rollout, plan: RolloutPlan, now: datetime) -> Counts:
    """Outcomes of the devices of the channel+model that reported for the release's version,
    and how many devices the current wave should reach (the devices' own bucket function)."""
    release = session.get_one(Release, rollout.release_id)
    fleet = session.scalars(
        select(Device.device_id).where(
            Device.channel == release.channel, Device.model == release.model
        )
    ).all()
    expected = sum(in_rollout(d, rollout.rollout_id, rollout.percentage) for d in fleet)
    latest: dict[str, Report] = {}
    rows = session.scalars(
        select(Report)
        .join(Device, Device.device_id == Report.device_id)
        .where(
            Report.target_version == release.version,
            Device.channel == release.channel,
            Device.model == release.model,
        )
        .order_by(Report.device_id, Report.seq)
    )
    for row in rows:
        latest[row.device_id] = row
    stuck_after = timedelta(seconds=plan.stuck_timeout_s)
    outcomes = (
        classify(
            UpdateState(r.state),
            now - r.received_at,
            stuck_after,
            _reason(r.reason),
            retrying=r.detail.get("final") is False,  # the agent tries again on its next poll
        )
        for r in latest.values()
    )
    return Counts.tally(outcomes, expected)


def _reason(stored: str) -> FailureReason:
    """A stored reason; one this server version does not know counts as a plain failure."""
    try:
        return FailureReason(stored)
    except ValueError:
        return FailureReason.INTERNAL


def _blocking_issues(session: Session, release_id: int) -> int:
    try:
        from server.services.feedback import open_blocking_issues
    except ImportError:  # the testers' module is not installed: nothing can block
        return 0
    return open_blocking_issues(session, release_id=release_id)


def gate_result(session: Session, rollout: Rollout, plan: RolloutPlan, now: datetime) -> GateResult:
    counts = rollout_counts(session, rollout, plan, now)
    return evaluate_gates(
        GateConfig(**{k: v for k, v in plan.gates.items() if k != "overridden"}),
        counts,
        soaked_s=(now - plan.wave_started_at).total_seconds(),
        blocking_issues=_blocking_issues(session, rollout.release_id),
        ignore=frozenset(plan.gates.get("overridden", [])),
    )


# --------------------------------------------------------------------------- evaluation


def evaluate_rollout(session: Session, rollout_id: str, *, now: datetime) -> RolloutChange:
    """One look at an active rollout: pause on a failing gate, advance or complete when all
    pass (inside its windows and rate), else leave it. Not active: only the numbers."""
    rollout, plan = _load(session, rollout_id)
    result = gate_result(session, rollout, plan, now)
    plan.last_numbers = {**result.numbers, "verdict": result.verdict.value, "gate": result.gate}
    if plan.state != RolloutState.ACTIVE:
        return _commit(session, rollout, now)
    decision = _decision(session, rollout, plan, result, now)
    if decision.event is RolloutEvent.PAUSE:
        plan.paused_gate = result.gate
    if decision.event is not None:
        _apply(session, rollout, plan, decision.event, "scheduler", decision.note, now)
    return _commit(session, rollout, now)


def _decision(
    session: Session, rollout: Rollout, plan: RolloutPlan, result: GateResult, now: datetime
) -> Decision:
    windows = [TimeWindow.parse(w) for w in plan.windows]
    rate_ok = True
    if plan.rate_per_minute > 0 and plan.wave_index + 1 < len(plan.waves):
        release = session.get_one(Release, rollout.release_id)
        fleet = len(
            session.scalars(
                select(Device.device_id).where(
                    Device.channel == release.channel, Device.model == release.model
                )
            ).all()
        )
        wait = rate_wait_s(
            fleet,
            plan.waves[plan.wave_index],
            plan.waves[plan.wave_index + 1],
            plan.rate_per_minute,
        )
        rate_ok = (now - plan.wave_started_at).total_seconds() >= wait
    return decide(
        result,
        wave_index=plan.wave_index,
        waves=plan.waves,
        in_window=may_advance_now(windows, now),
        rate_ok=rate_ok,
    )


def evaluate_active(session: Session, *, now: datetime) -> list[RolloutChange]:
    """What the scheduler does on every tick: evaluate every active staged rollout."""
    ids = session.scalars(
        select(RolloutPlan.rollout_id).where(RolloutPlan.state == RolloutState.ACTIVE.value)
    ).all()
    return [evaluate_rollout(session, rollout_id, now=now) for rollout_id in ids]


# --------------------------------------------------------------------------- by hand


def change_rollout(
    session: Session,
    rollout_id: str,
    event: RolloutEvent,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> RolloutChange:
    """Pause, resume or abort by hand (the reason goes into the audit table)."""
    rollout, plan = _load(session, rollout_id)
    if event is RolloutEvent.PAUSE:
        plan.paused_gate = ""
    _apply(session, rollout, plan, event, actor, reason, now)
    return _commit(session, rollout, now)


def advance_by_hand(
    session: Session, rollout_id: str, *, actor: str, reason: str, now: datetime
) -> RolloutChange:
    """The next wave now, whatever the gates say (the last wave: complete). Only an active
    rollout moves; the reason goes into the audit table."""
    rollout, plan = _load(session, rollout_id)
    last = plan.wave_index >= len(plan.waves) - 1
    event = RolloutEvent.COMPLETE if last else RolloutEvent.ADVANCE
    _apply(session, rollout, plan, event, actor, reason, now)
    return _commit(session, rollout, now)


def override_gate(
    session: Session, rollout_id: str, *, actor: str, reason: str, now: datetime
) -> RolloutChange:
    """Let a rollout paused by a gate go on: that gate is ignored from now on for this
    rollout, the rollout resumes and moves to its next wave. The reason is required."""
    if not reason.strip():
        raise InvalidInputError("an override needs a reason")
    rollout, plan = _load(session, rollout_id)
    if plan.state != RolloutState.PAUSED or not plan.paused_gate:
        raise ConflictError("only a rollout paused by a gate can be overridden")
    gate = plan.paused_gate
    plan.gates = {**plan.gates, "overridden": [*plan.gates.get("overridden", []), gate]}
    detail = {"gate": gate, "numbers": plan.last_numbers}
    _audit(session, rollout_id, actor, "override", reason, detail, now)
    _apply(session, rollout, plan, RolloutEvent.RESUME, actor, reason, now)
    last = plan.wave_index >= len(plan.waves) - 1
    event = RolloutEvent.COMPLETE if last else RolloutEvent.ADVANCE
    _apply(session, rollout, plan, event, actor, reason, now)
    return _commit(session, rollout, now)


def _apply(
    session: Session,
    rollout: Rollout,
    plan: RolloutPlan,
    event: RolloutEvent,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    try:
        state = next_state(RolloutState(plan.state), event)
    except RolloutError as exc:
        raise ConflictError(str(exc)) from None
    plan.state = state.value
    if event is RolloutEvent.ADVANCE:
        plan.wave_index += 1
        plan.wave_started_at = now
    if event is RolloutEvent.PAUSE:
        plan.paused_reason = reason
    elif event is not RolloutEvent.ABORT:
        plan.paused_reason, plan.paused_gate = "", ""
    _mirror(rollout, plan)
    plan.updated_at = now
    detail = {"wave": plan.waves[plan.wave_index], "gate": plan.paused_gate}
    _audit(session, rollout.rollout_id, actor, event.value, reason, detail, now)


def _mirror(rollout: Rollout, plan: RolloutPlan) -> None:
    """The two numbers devices see. Aborted: paused at 0 %, so no device that has not started
    begins; completed: 100 %."""
    state = RolloutState(plan.state)
    wave = float(plan.waves[plan.wave_index])
    rollout.percentage = {RolloutState.ABORTED: 0.0, RolloutState.COMPLETED: 100.0}.get(state, wave)
    rollout.paused = state in (RolloutState.PAUSED, RolloutState.ABORTED)


# --------------------------------------------------------------------------- reading


def _load(session: Session, rollout_id: str) -> tuple[Rollout, RolloutPlan]:
    rollout = session.get(Rollout, rollout_id, with_for_update=True)  # replicas take turns
    if rollout is None:
        raise NotFoundError(f"no rollout {rollout_id!r}")
    plan = session.get(RolloutPlan, rollout_id, with_for_update=True)
    if plan is None:
        raise ConflictError(f"rollout {rollout_id!r} is a plain percentage, not a staged rollout")
    return rollout, plan


def _audit(
    session: Session,
    rollout_id: str,
    actor: str,
    action: str,
    reason: str,
    detail: dict[str, Any],
    now: datetime,
) -> None:
    session.add(
        RolloutAudit(
            rollout_id=rollout_id, at=now, actor=actor, action=action, reason=reason, detail=detail
        )
    )


def _commit(session: Session, rollout: Rollout, now: datetime) -> RolloutChange:
    session.commit()
    release = session.get_one(Release, rollout.release_id)
    notice = current_notice(session, release.channel, release.model)
    return RolloutChange(rollout_status(session, rollout.rollout_id), notice)


def rollout_status(
    session: Session, rollout_id: str, trust: TrustCheck | None = None
) -> RolloutStatus:
    """The rollout's status; with `trust`, also how many devices of its channel and model
    trust stale metadata (they cannot take the release until they catch up)."""
    rollout, plan = _load(session, rollout_id)
    release = session.get_one(Release, rollout.release_id)
    stale = None
    if trust is not None:
        stale = count_stale_devices(session, release.channel, release.model, trust)
    audit = session.scalars(
        select(RolloutAudit).where(RolloutAudit.rollout_id == rollout_id).order_by(RolloutAudit.id)
    )
    return RolloutStatus(
        rollout_id=rollout_id,
        release_id=release.id,
        version=release.version,
        channel=release.channel,
        model=release.model,
        state=RolloutState(plan.state),
        waves=plan.waves,
        wave_index=plan.wave_index,
        waves_reached=plan.waves[: plan.wave_index + 1],
        percentage=rollout.percentage,
        paused=rollout.paused,
        paused_reason=plan.paused_reason,
        paused_gate=plan.paused_gate,
        gates=RolloutGates.model_validate(plan.gates),
        numbers=GateNumbers.model_validate(plan.last_numbers) if plan.last_numbers else None,
        stale_devices=stale,
        windows=plan.windows,
        rate_per_minute=plan.rate_per_minute,
        stuck_timeout_s=plan.stuck_timeout_s,
        wave_started_at=plan.wave_started_at,
        audit=[_audit_entry(a) for a in audit],
    )


def _audit_entry(row: RolloutAudit) -> AuditEntry:
    return AuditEntry(
        at=row.at, actor=row.actor, action=row.action, reason=row.reason, detail=row.detail
    )


def list_rollouts(session: Session) -> list[RolloutStatus]:
    """Every staged rollout, newest first (per release and channel: waves reached, state, and
    the gate that paused it)."""
    ids = session.scalars(
        select(RolloutPlan.rollout_id)
        .join(Rollout, Rollout.rollout_id == RolloutPlan.rollout_id)
        .order_by(Rollout.created_at.desc())
    ).all()
    return each_view(ids, lambda i: rollout_status(session, i), "rollout")
