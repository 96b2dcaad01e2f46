"""The weekly train as pure rules: a schedule of stages and when each may happen.

announce (Wednesday) -> internal (Thursday) -> preview (Friday) -> stable (Friday, first wave);
later stable waves follow the gates (server.services.rollout_rules). See docs/rollouts.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from server.services.rollout_rules import RolloutError


class Stage(enum.StrEnum):
    NEW = "new"
    ANNOUNCED = "announced"
    INTERNAL = "internal"
    PREVIEW = "preview"
    STABLE = "stable"


ORDER: tuple[Stage, ...] = tuple(Stage)
# The channel a stage rolls out to (announce rolls out nothing).
STAGE_CHANNEL: dict[Stage, str] = {
    Stage.INTERNAL: "internal",
    Stage.PREVIEW: "preview",
    Stage.STABLE: "stable",
}


@dataclass(frozen=True)
class StageTime:
    weekday: int  # 0 = Monday
    at: time

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise RolloutError("weekday is 0 (Monday) .. 6 (Sunday)")


@dataclass(frozen=True)
class TrainSchedule:
    """When each stage is due in the week of a build (times in UTC)."""

    times: dict[Stage, StageTime] = field(
        default_factory=lambda: {
            Stage.ANNOUNCED: StageTime(2, time(10, 0)),
            Stage.INTERNAL: StageTime(3, time(10, 0)),
            Stage.PREVIEW: StageTime(4, time(9, 0)),
            Stage.STABLE: StageTime(4, time(12, 0)),
        }
    )
    preview_waves: tuple[float, ...] = (100.0,)
    internal_waves: tuple[float, ...] = (100.0,)

    def due_at(self, week_of: date, stage: Stage) -> datetime:
        slot = self.times[stage]
        monday = week_of - timedelta(days=week_of.weekday())
        return datetime.combine(monday + timedelta(days=slot.weekday), slot.at, tzinfo=UTC)


def next_stage(stage: Stage) -> Stage | None:
    index = ORDER.index(stage)
    return ORDER[index + 1] if index + 1 < len(ORDER) else None


@dataclass(frozen=True)
class TrainStep:
    stage: Stage | None  # the stage to enter now, or None
    why: str


def train_step(
    schedule: TrainSchedule,
    *,
    week_of: date,
    stage: Stage,
    now: datetime,
    previous_done: bool,
    force: bool = False,
) -> TrainStep:
    """The stage to enter now: its time has come (or `force`) and the ring before it finished
    its rollout with every gate passing (`previous_done`; announce and internal need none)."""
    following = next_stage(stage)
    if following is None:
        return TrainStep(None, "the train is at stable; waves follow the gates")
    due = schedule.due_at(week_of, following)
    if not force and now < due:
        return TrainStep(None, f"{following} is due at {due.isoformat()}")
    needs_previous = following in (Stage.PREVIEW, Stage.STABLE)
    if needs_previous and not previous_done:
        return TrainStep(None, f"{stage} has not passed its gates yet")
    return TrainStep(following, f"{following} is due")
