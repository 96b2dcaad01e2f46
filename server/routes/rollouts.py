"""Staged rollouts and the weekly train: release engineers write, viewers read.

Every change publishes the channel's current notice, retained; nothing goes to one device.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from server.auth import Principal, Role, require_role
from server.deps import SessionDep, StateDep
from server.errors import InvalidInputError
from server.schemas import RolloutUpdate
from server.services.releases import update_rollout
from server.services.rollout_rules import DEFAULT_WAVES, GateConfig, RolloutError, RolloutEvent
from server.services.rollouts import (
    DEFAULT_STUCK_TIMEOUT_S,
    RolloutChange,
    RolloutSpec,
    change_rollout,
    create_rollout,
    evaluate_active,
    list_rollouts,
    override_gate,
    rollout_status,
)
from server.services.train import (
    TrainMove,
    advance_train,
    announcements,
    start_train,
    train_status,
)
from server.state import AppState
from wire import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["rollouts"])

ReleaseEngineer = Annotated[Principal, Depends(require_role(Role.RELEASE_ENGINEER))]
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER, Role.RELEASE_ENGINEER))]
Tester = Annotated[
    Principal, Depends(require_role(Role.VIEWER, Role.RELEASE_ENGINEER, Role.TESTER))
]


class GatesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_success_rate: float = Field(default=GateConfig.min_success_rate, ge=0, le=1)
    max_rollback_rate: float = Field(default=GateConfig.max_rollback_rate, ge=0, le=1)
    min_devices: int = Field(default=GateConfig.min_devices, ge=0)
    min_soak_s: float = Field(default=GateConfig.min_soak_s, ge=0)
    max_blocking_issues: int = Field(default=GateConfig.max_blocking_issues, ge=0)


class RolloutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: int
    waves: list[float] = Field(default_factory=lambda: list(DEFAULT_WAVES))
    gates: GatesIn = Field(default_factory=GatesIn)
    windows: list[str] = Field(default_factory=list)  # "HH:MM-HH:MM", UTC
    rate_per_minute: float = Field(default=0.0, ge=0)
    stuck_timeout_s: float = Field(default=DEFAULT_STUCK_TIMEOUT_S, gt=0)


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


class TrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=128)
    week_of: date | None = None
    notes: str = ""


class TrainAdvanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    model: str
    force: bool = False  # ignore the schedule's day (never the gates)


def _now() -> datetime:
    return datetime.now(UTC)


def _published(state: AppState, change: RolloutChange) -> dict[str, Any]:
    if change.notice is not None:
        state.publisher.publish_notice(change.notice)
    return change.rollout


@router.post("/rollouts", status_code=201)
def post_rollout(
    body: RolloutIn, session: SessionDep, state: StateDep, who: ReleaseEngineer
) -> dict[str, Any]:
    try:
        spec = RolloutSpec(
            release_id=body.release_id,
            waves=tuple(body.waves),
            gates=GateConfig(**body.gates.model_dump()),
            windows=tuple(body.windows),
            rate_per_minute=body.rate_per_minute,
            stuck_timeout_s=body.stuck_timeout_s,
        )
    except RolloutError as exc:
        raise InvalidInputError(str(exc)) from None
    return _published(state, create_rollout(session, spec, actor=_actor(who), now=_now()))


@router.get("/rollouts")
def get_rollouts(session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    return list_rollouts(session)


@router.post("/rollouts/evaluate")
def post_evaluate(session: SessionDep, state: StateDep, _: ReleaseEngineer) -> list[dict[str, Any]]:
    """What the scheduler does on each tick, now: evaluate every active rollout."""
    return [_published(state, c) for c in evaluate_active(session, now=_now())]


@router.get("/rollouts/{rollout_id}")
def get_rollout(rollout_id: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    return rollout_status(session, rollout_id)


@router.post("/rollouts/{rollout_id}")
def post_rollout_update(
    rollout_id: str, body: RolloutUpdate, session: SessionDep, state: StateDep, _: ReleaseEngineer
) -> dict[str, Any]:
    """A plain rollout's percentage or paused flag (the rollout `POST /releases` makes)."""
    updated = update_rollout(session, rollout_id, body)
    if updated.notice is not None:
        state.publisher.publish_notice(updated.notice)
    return updated.release


def _event_route(event: RolloutEvent) -> None:
    def handler(
        rollout_id: str, body: ReasonIn, session: SessionDep, state: StateDep, who: ReleaseEngineer
    ) -> dict[str, Any]:
        change = change_rollout(
            session, rollout_id, event, actor=_actor(who), reason=body.reason, now=_now()
        )
        return _published(state, change)

    handler.__name__ = f"post_rollout_{event.value}"
    router.post(f"/rollouts/{{rollout_id}}/{event.value}")(handler)


for _event in (RolloutEvent.PAUSE, RolloutEvent.RESUME, RolloutEvent.ABORT):
    _event_route(_event)


@router.post("/rollouts/{rollout_id}/override")
def post_override(
    rollout_id: str, body: ReasonIn, session: SessionDep, state: StateDep, who: ReleaseEngineer
) -> dict[str, Any]:
    change = override_gate(session, rollout_id, actor=_actor(who), reason=body.reason, now=_now())
    return _published(state, change)


# --------------------------------------------------------------------------- the train


@router.get("/train")
def get_train(session: SessionDep, state: StateDep, _: Viewer) -> list[dict[str, Any]]:
    return train_status(session, state.settings.train)


@router.post("/train", status_code=201)
def post_train(body: TrainIn, session: SessionDep, _: ReleaseEngineer) -> dict[str, Any]:
    now = _now()
    week_of = body.week_of or now.date()
    return start_train(
        session, version=body.version, model=body.model, week_of=week_of, notes=body.notes, now=now
    )


@router.post("/train/advance")
def post_train_advance(
    body: TrainAdvanceIn, session: SessionDep, state: StateDep, who: ReleaseEngineer
) -> dict[str, Any]:
    move = advance_train(
        session,
        state.settings.train,
        version=body.version,
        model=body.model,
        now=_now(),
        force=body.force,
        actor=_actor(who),
    )
    publish_move(state, move)
    return {"train": move.train, "moved_to": move.moved_to, "why": move.why}


def publish_move(state: AppState, move: TrainMove) -> None:
    if move.announcement is not None:
        state.publisher.publish_announcement(*move.announcement)
    if move.rollout is not None and move.rollout.notice is not None:
        state.publisher.publish_notice(move.rollout.notice)


@router.get("/announcements")
def get_announcements(session: SessionDep, state: StateDep, _: Tester) -> list[dict[str, Any]]:
    return announcements(session, state.settings.train)


def _actor(who: Principal) -> str:
    return f"{who.role.value}:{who.subject}"
