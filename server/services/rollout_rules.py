"""The pure rules of a staged rollout: waves, the state table, gates, counts, windows, rate.

Nothing here touches the database, the clock or the broker: `server.services.rollouts` reads
the numbers, calls these functions and stores what they decide. See docs/rollouts.md.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Final

from wire import FailureReason, UpdateState

DEFAULT_WAVES: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0)
DEFAULT_CHANNELS: tuple[str, ...] = ("internal", "preview", "stable")
DEFAULT_STUCK_TIMEOUT_S = 1800.0  # a device silent this long after starting counts as failed


class RolloutError(ValueError):
    """A wave plan, gate configuration or transition that the rules refuse."""


# --------------------------------------------------------------------------- waves


def check_waves(waves: Sequence[float]) -> tuple[float, ...]:
    """Strictly increasing percentages in (0, 100], ending at 100."""
    plan = tuple(float(w) for w in waves)
    if not plan:
        raise RolloutError("a rollout needs at least one wave")
    if any(not 0 < w <= 100 for w in plan):
        raise RolloutError(f"every wave must be within (0, 100]: {list(plan)}")
    if any(b <= a for a, b in itertools.pairwise(plan)):
        raise RolloutError(f"waves must strictly increase: {list(plan)}")
    if plan[-1] != 100:
        raise RolloutError(f"the last wave must be 100 %: {list(plan)}")
    return plan


def exponential_waves(first: float = 1.0, factor: float = 2.0) -> tuple[float, ...]:
    """first, first*factor, ... capped at 100 (exponential growth as a wave plan)."""
    if not 0 < first <= 100 or factor <= 1:
        raise RolloutError("exponential waves need 0 < first <= 100 and factor > 1")
    waves = [first]
    while waves[-1] < 100:
        grown = max(round(waves[-1] * factor, 2), round(waves[-1] + 0.01, 2))  # always grows
        waves.append(min(100.0, grown))
    return check_waves(waves)


# --------------------------------------------------------------------------- state table


class RolloutState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ABORTED = "aborted"
    COMPLETED = "completed"


class RolloutEvent(enum.StrEnum):
    ADVANCE = "advance"  # the gates passed: on to the next wave
    COMPLETE = "complete"  # the gates passed at the last wave
    PAUSE = "pause"  # by hand, or a gate failed
    RESUME = "resume"
    ABORT = "abort"


_S, _E = RolloutState, RolloutEvent
TRANSITIONS: dict[tuple[RolloutState, RolloutEvent], RolloutState] = {
    (_S.ACTIVE, _E.ADVANCE): _S.ACTIVE,
    (_S.ACTIVE, _E.COMPLETE): _S.COMPLETED,
    (_S.ACTIVE, _E.PAUSE): _S.PAUSED,
    (_S.ACTIVE, _E.ABORT): _S.ABORTED,
    (_S.PAUSED, _E.RESUME): _S.ACTIVE,
    (_S.PAUSED, _E.PAUSE): _S.PAUSED,
    (_S.PAUSED, _E.ABORT): _S.ABORTED,
}


def next_state(state: RolloutState, event: RolloutEvent) -> RolloutState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise RolloutError(f"a {state} rollout cannot {event}") from None


# --------------------------------------------------------------------------- counts


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    STUCK = "stuck"  # started, then silent past the timeout: a failure for the gates
    IN_PROGRESS = "in_progress"
    NOT_STARTED = "not_started"  # idle or deferred: says nothing about the build


STARTED = frozenset(
    {UpdateState.DOWNLOADING, UpdateState.INSTALLED, UpdateState.REBOOTING, UpdateState.TRIAL}
)


# Refusals that say the build was offered to the wrong device (another channel or model: a
# hostile or mistaken notice), not that the build is bad.
NOT_FOR_THIS_DEVICE: Final = frozenset({FailureReason.WRONG_CHANNEL, FailureReason.WRONG_MODEL})


def classify(
    state: UpdateState,
    silent_for: timedelta,
    stuck_after: timedelta,
    reason: FailureReason = FailureReason.NONE,
    *,
    retrying: bool = False,
) -> Outcome:
    """What one device's latest report for the rollout's version says about the build.
    `retrying`: a failure the device said it will try again (a download cut by a restarting
    server, say): still in progress, unless the device then goes silent."""
    if state is UpdateState.FAILED and reason in NOT_FOR_THIS_DEVICE:
        return Outcome.NOT_STARTED
    if state is UpdateState.COMMITTED:
        return Outcome.SUCCESS
    if state in (UpdateState.ROLLED_BACK, UpdateState.ROLLING_BACK):
        return Outcome.ROLLED_BACK
    if state is UpdateState.FAILED and not retrying:
        return Outcome.FAILED
    if state in STARTED or state is UpdateState.FAILED:
        return Outcome.STUCK if silent_for > stuck_after else Outcome.IN_PROGRESS
    return Outcome.NOT_STARTED


@dataclass(frozen=True)
class Counts:
    success: int = 0
    rolled_back: int = 0
    failed: int = 0  # includes stuck devices
    in_progress: int = 0
    expected: int = 0  # enrolled devices of the channel+model whose bucket is in the wave

    @property
    def finished(self) -> int:
        return self.success + self.rolled_back + self.failed

    @classmethod
    def tally(cls, outcomes: Iterable[Outcome], expected: int) -> Counts:
        seen = list(outcomes)
        return cls(
            success=seen.count(Outcome.SUCCESS),
            rolled_back=seen.count(Outcome.ROLLED_BACK),
            failed=seen.count(Outcome.FAILED) + seen.count(Outcome.STUCK),
            in_progress=seen.count(Outcome.IN_PROGRESS),
            expected=expected,
        )


# --------------------------------------------------------------------------- gates


@dataclass(frozen=True)
class GateConfig:
    min_success_rate: float = 0.95  # committed / finished, at least
    max_rollback_rate: float = 0.02  # rolled back / (committed + rolled back), at most
    min_devices: int = 10  # finished devices, at least (capped by the wave's expected devices)
    min_soak_s: float = 3600.0  # time in a wave before the next one
    max_blocking_issues: int = 0  # open blocking tester issues for the build, at most

    def __post_init__(self) -> None:
        if not (0 <= self.min_success_rate <= 1 and 0 <= self.max_rollback_rate <= 1):
            raise RolloutError("rates must be within 0..1")
        if self.min_devices < 0 or self.min_soak_s < 0 or self.max_blocking_issues < 0:
            raise RolloutError("minimums must not be negative")


class Verdict(enum.StrEnum):
    PASS = "pass"  # noqa: S105  # a gate verdict, not a password
    WAIT = "wait"  # not enough devices or soak time yet
    FAIL = "fail"  # pause the rollout


@dataclass(frozen=True)
class GateResult:
    verdict: Verdict
    gate: str = ""  # the gate that failed or holds, "" when all pass
    value: float = 0.0
    threshold: float = 0.0
    numbers: dict[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        if self.verdict is Verdict.PASS:
            return "all gates pass"
        return f"{self.gate} = {self.value:g} (threshold {self.threshold:g})"


def evaluate_gates(
    config: GateConfig,
    counts: Counts,
    *,
    soaked_s: float,
    blocking_issues: int,
    ignore: frozenset[str] = frozenset(),
) -> GateResult:
    """FAIL when a number is already bad, WAIT when one is not there yet, else PASS.

    The success rate is over finished devices, the rollback rate over devices that booted the
    build (committed or rolled back), so failures of another kind never dilute it. Both fail
    early once the failures alone make the threshold unreachable even if every device still
    expected in the wave succeeds. Gates named
    in `ignore` were overridden by a release engineer (with a recorded reason)."""
    result = _evaluate(config, counts, soaked_s, blocking_issues)
    while result.verdict is Verdict.FAIL and result.gate in ignore:
        config = _relaxed(config, result.gate)
        result = _evaluate(config, counts, soaked_s, blocking_issues)
    return result


def _relaxed(config: GateConfig, gate: str) -> GateConfig:
    loose = {
        "blocking_issues": {"max_blocking_issues": 1 << 30},
        "success_rate": {"min_success_rate": 0.0},
        "rollback_rate": {"max_rollback_rate": 1.0},
    }
    return replace(config, **loose[gate])  # type: ignore[arg-type]


def _evaluate(
    config: GateConfig, counts: Counts, soaked_s: float, blocking_issues: int
) -> GateResult:
    numbers = _numbers(counts, soaked_s, blocking_issues)
    if blocking_issues > config.max_blocking_issues:
        return GateResult(
            Verdict.FAIL, "blocking_issues", blocking_issues, config.max_blocking_issues, numbers
        )
    required = min(config.min_devices, counts.expected)
    enough = counts.finished >= max(required, 1)
    outstanding = max(counts.expected - counts.finished, 0)
    best_total = counts.finished + outstanding
    best_success = (counts.success + outstanding) / best_total if best_total else 1.0
    booted = counts.success + counts.rolled_back
    best_rollback = counts.rolled_back / (booted + outstanding) if booted + outstanding else 0.0
    success_rate = counts.success / counts.finished if counts.finished else 1.0
    rollback_rate = counts.rolled_back / booted if booted else 0.0
    if (enough and success_rate < config.min_success_rate) or (
        best_success < config.min_success_rate
    ):
        return GateResult(
            Verdict.FAIL, "success_rate", success_rate, config.min_success_rate, numbers
        )
    if (enough and rollback_rate > config.max_rollback_rate) or (
        best_rollback > config.max_rollback_rate
    ):
        return GateResult(
            Verdict.FAIL, "rollback_rate", rollback_rate, config.max_rollback_rate, numbers
        )
    if counts.finished < required:
        return GateResult(Verdict.WAIT, "min_devices", counts.finished, required, numbers)
    if soaked_s < config.min_soak_s:
        return GateResult(Verdict.WAIT, "min_soak_s", soaked_s, config.min_soak_s, numbers)
    return GateResult(Verdict.PASS, numbers=numbers)


def _numbers(counts: Counts, soaked_s: float, blocking_issues: int) -> dict[str, float]:
    finished = counts.finished
    booted = counts.success + counts.rolled_back
    return {
        "success": counts.success,
        "rolled_back": counts.rolled_back,
        "failed": counts.failed,
        "in_progress": counts.in_progress,
        "finished": finished,
        "expected": counts.expected,
        "success_rate": counts.success / finished if finished else 1.0,
        "rollback_rate": counts.rolled_back / booted if booted else 0.0,
        "soaked_s": soaked_s,
        "blocking_issues": blocking_issues,
    }


# --------------------------------------------------------------------------- time windows, rate


@dataclass(frozen=True)
class TimeWindow:
    """Hours in which waves may advance, e.g. 00:00-04:00 (end before start wraps midnight)."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        try:
            start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise RolloutError(f"a window is HH:MM-HH:MM, not {text!r}") from None
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def may_advance_now(windows: Sequence[TimeWindow], now: datetime) -> bool:
    """No windows: any time. Otherwise only inside one (in `now`'s own time zone)."""
    moment = now.timetz().replace(tzinfo=None)
    return not windows or any(w.contains(moment) for w in windows)


def rate_wait_s(fleet: int, current: float, following: float, per_minute: float) -> float:
    """Seconds a wave must last so that moving to `following` % adds at most `per_minute`
    devices a minute (0 when no rate is set)."""
    if per_minute <= 0:
        return 0.0
    added = math.ceil(fleet * max(following - current, 0) / 100)
    return added / per_minute * 60.0


@dataclass(frozen=True)
class Decision:
    """What one evaluation of an active rollout decides."""

    event: RolloutEvent | None  # None: stay in this wave for now
    gates: GateResult
    note: str = ""


def decide(
    gates: GateResult,
    *,
    wave_index: int,
    waves: Sequence[float],
    in_window: bool,
    rate_ok: bool,
) -> Decision:
    """Pause on a failing gate (at any time); advance only when all pass, inside a window
    and within the rate; complete after the last wave."""
    if gates.verdict is Verdict.FAIL:
        return Decision(RolloutEvent.PAUSE, gates, gates.reason)
    if gates.verdict is Verdict.WAIT:
        return Decision(None, gates, f"waiting: {gates.reason}")
    if wave_index >= len(waves) - 1:
        return Decision(RolloutEvent.COMPLETE, gates, "last wave passed")
    if not in_window:
        return Decision(None, gates, "outside the rollout windows")
    if not rate_ok:
        return Decision(None, gates, "held by the rate limit")
    return Decision(RolloutEvent.ADVANCE, gates, f"on to {waves[wave_index + 1]:g} %")
