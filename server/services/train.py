"""The weekly train over the database: one row per build, moved stage by stage.

announce -> internal -> preview -> stable: each step waits for its day in the schedule and
(for preview and stable) for the ring before to complete its rollout with every gate passing.
Entering a ring creates a staged rollout of that ring's release of the same version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.api_models import Announcement, TrainStatus
from server.errors import ConflictError, NotFoundError
from server.models import Release, Rollout, RolloutPlan, Train
from server.services.rollout_rules import DEFAULT_WAVES, GateConfig, RolloutState
from server.services.rollouts import RolloutChange, RolloutSpec, create_rollout
from server.services.train_rules import (
    STAGE_CHANNEL,
    Stage,
    TrainSchedule,
    train_step,
)
from server.services.views import each_view
from wire import PROTOCOL_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """The train's configuration: schedule, stable waves and the gates every ring uses."""

    schedule: TrainSchedule = field(default_factory=TrainSchedule)
    stable_waves: tuple[float, ...] = DEFAULT_WAVES
    gates: GateConfig = field(default_factory=GateConfig)
    stuck_timeout_s: float = 1800.0
    windows: tuple[str, ...] = ()
    rate_per_minute: float = 0.0

    def waves(self, stage: Stage) -> tuple[float, ...]:
        if stage is Stage.INTERNAL:
            return self.schedule.internal_waves
        if stage is Stage.PREVIEW:
            return self.schedule.preview_waves
        return self.stable_waves


@dataclass(frozen=True)
class StageEntry:
    """What entering a stage did: a ring's new rollout, or the announcement to retain."""

    why: str
    rollout: RolloutChange | None = None  # the rollout a ring stage created
    announcement: tuple[str, bytes] | None = None  # (channel, payload) to retain


@dataclass(frozen=True)
class TrainMove:
    train: TrainStatus
    moved_to: str  # the stage entered, or "" when the train stayed
    entry: StageEntry

    @property
    def why(self) -> str:
        return self.entry.why

    @property
    def rollout(self) -> RolloutChange | None:
        return self.entry.rollout

    @property
    def announcement(self) -> tuple[str, bytes] | None:
        return self.entry.announcement


def start_train(
    session: Session, *, version: str, model: str, week_of: date, notes: str, now: datetime
) -> TrainStatus:
    train = Train(
        version=version,
        model=model,
        week_of=week_of.isoformat(),
        stage=Stage.NEW.value,
        notes=notes,
        created_at=now,
        updated_at=now,
    )
    session.add(train)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"a train for {version} on {model} exists already") from None
    return train_view(session, train, TrainConfig())


def advance_train(
    session: Session,
    config: TrainConfig,
    *,
    version: str,
    model: str,
    now: datetime,
    force: bool = False,
    actor: str = "scheduler",
) -> TrainMove:
    """Enter the next stage if the schedule and the gates allow (or `force` the schedule; the
    gates of the ring before are never skipped)."""
    train = _find(session, version, model)
    stage = Stage(train.stage)
    step = train_step(
        config.schedule,
        week_of=date.fromisoformat(train.week_of),
        stage=stage,
        now=now,
        previous_done=_ring_done(session, train, stage),
        force=force,
    )
    if step.stage is None:
        return TrainMove(train_view(session, train, config), "", StageEntry(step.why))
    entry = _enter(session, config, train, step.stage, now, actor)
    train.stage, train.updated_at = step.stage.value, now
    session.commit()
    return TrainMove(train_view(session, train, config), step.stage.value, entry)


def _enter(
    session: Session, config: TrainConfig, train: Train, stage: Stage, now: datetime, actor: str
) -> StageEntry:
    if stage is Stage.ANNOUNCED:
        return StageEntry("announced", announcement=_announcement(train, config))
    release = _release(session, train, STAGE_CHANNEL[stage])
    spec = RolloutSpec(
        release_id=release.id,
        waves=config.waves(stage),
        gates=config.gates,
        windows=config.windows,
        rate_per_minute=config.rate_per_minute,
        stuck_timeout_s=config.stuck_timeout_s,
        ring=stage.value,
    )
    change = create_rollout(session, spec, actor=f"train:{actor}", now=now)
    return StageEntry(f"{stage} rollout started", rollout=change)


def _announcement(train: Train, config: TrainConfig) -> tuple[str, bytes]:
    preview_at = config.schedule.due_at(date.fromisoformat(train.week_of), Stage.PREVIEW)
    payload = {
        "v": PROTOCOL_VERSION,
        "version": train.version,
        "model": train.model,
        "notes": train.notes,
        "preview_at": preview_at.isoformat(),
    }
    return "preview", json.dumps(payload, sort_keys=True).encode()


def announcements(session: Session, config: TrainConfig) -> list[Announcement]:
    """What testers are told is coming (every announced train, newest first)."""
    trains = session.scalars(
        select(Train).where(Train.stage != Stage.NEW.value).order_by(Train.id.desc())
    )
    return [Announcement.model_validate_json(_announcement(t, config)[1]) for t in trains]


def _release(session: Session, train: Train, channel: str) -> Release:
    release = session.scalar(
        select(Release).where(
            Release.version == train.version,
            Release.model == train.model,
            Release.channel == channel,
        )
    )
    if release is None:
        raise ConflictError(
            f"{train.version} is not published to {channel}/{train.model}: publish it first"
        )
    return release


def _ring_state(session: Session, train: Train, channel: str) -> str:
    """The state of the train's latest staged rollout on `channel` ("" if there is none)."""
    state = session.scalar(
        select(RolloutPlan.state)
        .join(Rollout, Rollout.rollout_id == RolloutPlan.rollout_id)
        .join(Release, Release.id == Rollout.release_id)
        .where(
            Release.version == train.version,
            Release.model == train.model,
            Release.channel == channel,
        )
        .order_by(Rollout.created_at.desc())
        .limit(1)
    )
    return state or ""


def _ring_done(session: Session, train: Train, stage: Stage) -> bool:
    channel = STAGE_CHANNEL.get(stage)
    if channel is None:
        return True
    return _ring_state(session, train, channel) == RolloutState.COMPLETED.value


def _find(session: Session, version: str, model: str) -> Train:
    train = session.scalar(select(Train).where(Train.version == version, Train.model == model))
    if train is None:
        raise NotFoundError(f"no train for {version} on {model}")
    return train


def train_view(session: Session, train: Train, config: TrainConfig) -> TrainStatus:
    week_of = date.fromisoformat(train.week_of)
    return TrainStatus(
        version=train.version,
        model=train.model,
        week_of=week_of,
        stage=Stage(train.stage),
        notes=train.notes,
        due={s.value: config.schedule.due_at(week_of, s) for s in STAGE_TIMES},
        rings={c: _ring_state(session, train, c) for c in STAGE_CHANNEL.values()},
    )


STAGE_TIMES = (Stage.ANNOUNCED, Stage.INTERNAL, Stage.PREVIEW, Stage.STABLE)


def train_status(session: Session, config: TrainConfig) -> list[TrainStatus]:
    trains = session.scalars(select(Train).order_by(Train.id))
    return each_view(trains, lambda t: train_view(session, t, config), "train")


def advance_all(session: Session, config: TrainConfig, *, now: datetime) -> list[TrainMove]:
    """What the scheduler does on every tick: every train not yet at stable, on time."""
    pairs = session.execute(
        select(Train.version, Train.model).where(Train.stage != Stage.STABLE.value)
    ).all()
    moves = []
    for version, model in pairs:
        try:
            move = advance_train(session, config, version=version, model=model, now=now)
        except ConflictError as exc:  # e.g. the build is not published to the ring yet
            session.rollback()
            log.warning("train %s/%s held: %s", version, model, exc)
            continue
        if move.moved_to:
            moves.append(move)
    return moves
