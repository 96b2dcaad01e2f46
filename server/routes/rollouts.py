"""Staged rollouts and the weekly train: release engineers write, viewers read.

Every change publishes the channel's current notice, retained; nothing goes to one device.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from server.api_models import Announcement, Release, RolloutStatus, TrainAdvance, TrainStatus
from server.auth import Principal, Role, require_role
from server.deps import SessionDep, StateDep
from server.errors import InvalidInputError
from server.input_bounds import ShortIdInPath
from server.schemas import ReasonIn, RolloutIn, RolloutUpdate, TrainAdvanceIn, TrainIn
from server.services.releases import update_rollout
from server.services.rollout_rules import GateConfig, RolloutError, RolloutEvent
from server.services.rollouts import (
    RolloutChange,
    RolloutSpec,
    change_rollout,
    create_rollout,
    evaluate_active,
    list_rollouts,
    override_gate,
    rollout_status,
)
from server.services.staleness import count_stale_devices, trust_check
from server.services.train import (
    TrainMove,
    advance_train,
    announcements,
    start_train,
    train_status,
)
from server.state import AppState
from wire.paths import (
    ADVANCE_TRAIN_PATH,
    ANNOUNCEMENTS_PATH,
    EVALUATE_ROLLOUTS_PATH,
    ROLLOUTS_PATH,
    TRAIN_PATH,
    rollout_action_path,
    rollout_path,
)

router = APIRouter(tags=["rollouts"])

ReleaseEngineer = Annotated[Principal, Depends(require_role(Role.RELEASE_ENGINEER))]
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER, Role.RELEASE_ENGINEER))]
Tester = Annotated[
    Principal, Depends(require_role(Role.VIEWER, Role.RELEASE_ENGINEER, Role.TESTER))
]
ONE_ROLLOUT = rollout_path("{rollout_id}")


def _now() -> datetime:
    return datetime.now(UTC)


def _published(state: AppState, change: RolloutChange, session: Session) -> RolloutStatus:
    if change.notice is not None:
        state.publisher.publish_notice(change.notice)
    return _counted(state, session, change.rollout)


def _counted(state: AppState, session: Session, status: RolloutStatus) -> RolloutStatus:
    """Every rollout view counts the stale devices of its channel+model, the same way."""
    settings = state.settings
    trust = trust_check(settings.repo_dir, settings.stale_metadata_after_s)
    stale = count_stale_devices(session, status.channel, status.model, trust)
    return status.model_copy(update={"stale_devices": stale})


@router.post(ROLLOUTS_PATH, status_code=201, response_model=RolloutStatus)
def post_rollout(
    body: RolloutIn, session: SessionDep, state: StateDep, who: ReleaseEngineer
) -> RolloutStatus:
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
    change = create_rollout(session, spec, actor=_actor(who), now=_now())
    return _published(state, change, session)


@router.get(ROLLOUTS_PATH, response_model=list[RolloutStatus])
def get_rollouts(session: SessionDep, state: StateDep, _: Viewer) -> list[RolloutStatus]:
    return [_counted(state, session, status) for status in list_rollouts(session)]


@router.post(EVALUATE_ROLLOUTS_PATH, response_model=list[RolloutStatus])
def post_evaluate(session: SessionDep, state: StateDep, _: ReleaseEngineer) -> list[RolloutStatus]:
    """What the scheduler does on each tick, now: evaluate every active rollout."""
    return [_published(state, c, session) for c in evaluate_active(session, now=_now())]


@router.get(ONE_ROLLOUT, response_model=RolloutStatus)
def get_rollout(
    rollout_id: ShortIdInPath, session: SessionDep, state: StateDep, _: Viewer
) -> RolloutStatus:
    """The rollout, with how many of its channel+model's devices trust stale metadata."""
    return _counted(state, session, rollout_status(session, rollout_id))


@router.post(ONE_ROLLOUT, response_model=Release)
def post_rollout_update(
    rollout_id: ShortIdInPath,
    body: RolloutUpdate,
    session: SessionDep,
    state: StateDep,
    _: ReleaseEngineer,
) -> Release:
    """A plain rollout's percentage or paused flag (the rollout `POST /releases` makes)."""
    updated = update_rollout(session, rollout_id, body)
    if updated.notice is not None:
        state.publisher.publish_notice(updated.notice)
    return updated.release


def _event_route(event: RolloutEvent) -> None:
    def handler(
        rollout_id: ShortIdInPath,
        body: ReasonIn,
        session: SessionDep,
        state: StateDep,
        who: ReleaseEngineer,
    ) -> RolloutStatus:
        change = change_rollout(
            session, rollout_id, event, actor=_actor(who), reason=body.reason, now=_now()
        )
        return _published(state, change, session)

    handler.__name__ = f"post_rollout_{event.value}"
    path = rollout_action_path("{rollout_id}", event.value)
    router.post(path, response_model=RolloutStatus)(handler)


for _event in (RolloutEvent.PAUSE, RolloutEvent.RESUME, RolloutEvent.ABORT):
    _event_route(_event)


@router.post(rollout_action_path("{rollout_id}", "override"), response_model=RolloutStatus)
def post_override(
    rollout_id: ShortIdInPath,
    body: ReasonIn,
    session: SessionDep,
    state: StateDep,
    who: ReleaseEngineer,
) -> RolloutStatus:
    change = override_gate(session, rollout_id, actor=_actor(who), reason=body.reason, now=_now())
    return _published(state, change, session)


# --------------------------------------------------------------------------- the train


@router.get(TRAIN_PATH, response_model=list[TrainStatus])
def get_train(session: SessionDep, state: StateDep, _: Viewer) -> list[TrainStatus]:
    return train_status(session, state.settings.train)


@router.post(TRAIN_PATH, status_code=201, response_model=TrainStatus)
def post_train(body: TrainIn, session: SessionDep, _: ReleaseEngineer) -> TrainStatus:
    now = _now()
    week_of = body.week_of or now.date()
    return start_train(
        session, version=body.version, model=body.model, week_of=week_of, notes=body.notes, now=now
    )


@router.post(ADVANCE_TRAIN_PATH, response_model=TrainAdvance)
def post_train_advance(
    body: TrainAdvanceIn, session: SessionDep, state: StateDep, who: ReleaseEngineer
) -> TrainAdvance:
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
    return TrainAdvance(train=move.train, moved_to=move.moved_to, why=move.why)


def publish_move(state: AppState, move: TrainMove) -> None:
    if move.announcement is not None:
        state.publisher.publish_announcement(*move.announcement)
    if move.rollout is not None and move.rollout.notice is not None:
        state.publisher.publish_notice(move.rollout.notice)


@router.get(ANNOUNCEMENTS_PATH, response_model=list[Announcement])
def get_announcements(session: SessionDep, state: StateDep, _: Tester) -> list[Announcement]:
    return announcements(session, state.settings.train)


def _actor(who: Principal) -> str:
    return f"{who.role.value}:{who.subject}"
