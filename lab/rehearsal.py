"""Rehearse a rollout plan in simulated time: no server, no sockets, no real device.

A discrete-event simulation over the server's own pure rules (`server.services.rollout_rules`:
gates, `decide`, the state table, windows, rate; `server.services.train_rules`: the weekly
train) and the devices' bucket function (`wire.rollout`). Devices are simulated in aggregate:
each wave adds a slice of the fleet, a slice's online devices pick the build up on their next
poll (uniform over one poll interval) and finish `install_s` later, failing with the given
rate; per-tick counts are sampled, so a million devices costs the same as a hundred.
See docs/rollouts.md ("Rehearse a plan").
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from server.services.rollout_rules import (
    DEFAULT_WAVES,
    Counts,
    GateConfig,
    RolloutEvent,
    RolloutState,
    TimeWindow,
    check_waves,
    decide,
    evaluate_gates,
    may_advance_now,
    next_state,
    rate_wait_s,
)
from server.services.train_rules import Stage, TrainSchedule, train_step
from wire.rollout import BUCKETS, in_rollout

EXACT_FLEET = 2_000  # up to this many devices, each device's own bucket decides its wave
DEFAULT_START = datetime(2027, 1, 8, 12, 0, tzinfo=UTC)  # a Friday, the stable stage's slot


@dataclass(frozen=True)
class Fleet:
    devices: int
    poll_interval_s: float = 6 * 3600.0
    offline_share: float = 0.0  # never polls during the rehearsal
    fail_rate: float = 0.0  # rolls back after installing
    install_s: float = 1200.0  # download, install, reboot, health check


@dataclass(frozen=True)
class Plan:
    waves: tuple[float, ...] = DEFAULT_WAVES
    gates: GateConfig = field(default_factory=GateConfig)
    windows: tuple[TimeWindow, ...] = ()
    rate_per_minute: float = 0.0
    tick_s: float = 300.0  # how often the scheduler evaluates the rollout
    horizon_s: float = 14 * 86400.0


@dataclass(frozen=True)
class WaveOpened:
    percentage: float
    opened_at_s: float
    devices: int  # the devices the wave should reach, in total


@dataclass(frozen=True)
class Rehearsal:
    state: str  # completed, paused (a gate stopped it) or active (still going at the horizon)
    waves: list[WaveOpened]
    ended_at_s: float
    stopped_in_wave: int | None  # index of the wave a gate stopped
    stop_reason: str
    reached: int  # devices that started the build: finished or still in flight
    finished: int
    failed: int
    in_flight: int


# --------------------------------------------------------------------------- sampling


def binomial(rng: random.Random, trials: int, chance: float) -> int:
    """A Binomial(trials, chance) sample in plain Python, fast for any number of trials."""
    if trials <= 0 or chance <= 0:
        return 0
    if chance >= 1:
        return trials
    if chance > 0.5:
        return trials - binomial(rng, trials, 1 - chance)
    if trials < 40:
        return sum(rng.random() < chance for _ in range(trials))
    if trials * chance < 20:
        return _binomial_by_gaps(rng, trials, chance)
    spread = math.sqrt(trials * chance * (1 - chance))
    return min(max(round(rng.gauss(trials * chance, spread)), 0), trials)


def _binomial_by_gaps(rng: random.Random, trials: int, chance: float) -> int:
    """Count successes by jumping geometric gaps between them (cost ~ the mean)."""
    log_miss = math.log1p(-chance)
    successes, position = 0, 0
    while True:
        gap = math.log(1.0 - rng.random()) / log_miss if log_miss else math.inf
        if gap >= trials:
            return successes
        position += int(gap) + 1
        if position > trials:
            return successes
        successes += 1


def wave_slices(devices: int, waves: tuple[float, ...], rng: random.Random) -> list[int]:
    """How many devices each wave adds: small fleets by each device's own bucket
    (`wire.rollout.in_rollout`), large ones sampled from the buckets' uniform shares."""
    if devices <= EXACT_FLEET:
        rollout_id = f"rehearsal-{rng.getrandbits(32):08x}"
        return [_joining(devices, rollout_id, waves, index) for index in range(len(waves))]
    slices, left, share_left = [], devices, 1.0
    for before, wave in zip((0.0, *waves), waves, strict=False):
        share = _bucket_share(wave) - _bucket_share(before)
        taken = binomial(rng, left, share / share_left) if share_left > 0 else 0
        slices.append(taken)
        left, share_left = left - taken, share_left - share
    return slices


def _joining(devices: int, rollout_id: str, waves: tuple[float, ...], index: int) -> int:
    before = waves[index - 1] if index else 0.0
    names = (f"device-{number}" for number in range(devices))
    return sum(
        in_rollout(name, rollout_id, waves[index]) and not in_rollout(name, rollout_id, before)
        for name in names
    )


def _bucket_share(percentage: float) -> float:
    """The share of buckets below a percentage, rounded as `wire.rollout.in_rollout` does."""
    return min(max(round(percentage * BUCKETS / 100), 0), BUCKETS) / BUCKETS


# --------------------------------------------------------------------------- one rollout


@dataclass
class _Slice:
    """The devices one wave added: who has not polled yet, and installs under way."""

    opened_at_s: float
    waiting: int  # online, not picked up yet
    installing: deque[tuple[float, int]] = field(default_factory=deque)  # (finishes at, how many)

    def started(self, start: float, end: float, poll_s: float, rng: random.Random) -> int:
        """Devices that poll in (start, end] and begin installing; each polls once per interval."""
        done_before = min(max((start - self.opened_at_s) / poll_s, 0.0), 1.0)
        done_after = min(max((end - self.opened_at_s) / poll_s, 0.0), 1.0)
        if done_before >= 1.0:
            return 0
        count = binomial(rng, self.waiting, (done_after - done_before) / (1.0 - done_before))
        self.waiting -= count
        return count


@dataclass
class _Tally:
    success: int = 0
    failed: int = 0
    in_flight: int = 0

    def counts(self, expected: int) -> Counts:
        return Counts(
            success=self.success,
            rolled_back=self.failed,
            in_progress=self.in_flight,
            expected=expected,
        )


def rehearse(fleet: Fleet, plan: Plan, *, seed: int, start: datetime = DEFAULT_START) -> Rehearsal:
    """Run one rollout of `plan` over `fleet` from `start` until it completes, a gate pauses
    it, or the horizon; the scheduler looks at it every `tick_s` like the server's does."""
    rng = random.Random(seed)
    waves = check_waves(plan.waves)
    slices = wave_slices(fleet.devices, waves, rng)
    run = _Run(fleet, plan, waves, slices, rng, start)
    run.open_wave(0.0)
    now = 0.0
    while run.state is RolloutState.ACTIVE and now < plan.horizon_s:
        now += plan.tick_s
        run.advance(now - plan.tick_s, now)
        run.evaluate(now)
    return run.result(now)


class _Run:
    def __init__(
        self,
        fleet: Fleet,
        plan: Plan,
        waves: tuple[float, ...],
        slices: list[int],
        rng: random.Random,
        start: datetime,
    ) -> None:
        self.fleet, self.plan, self.waves, self.slices = fleet, plan, waves, slices
        self.rng, self.start = rng, start
        self.state = RolloutState.ACTIVE
        self.opened: list[WaveOpened] = []
        self.open: list[_Slice] = []
        self.tally = _Tally()
        self.stop_reason = ""

    @property
    def wave_index(self) -> int:
        return len(self.opened) - 1

    def open_wave(self, now: float) -> None:
        index = len(self.opened)
        added = self.slices[index]
        online = binomial(self.rng, added, 1.0 - self.fleet.offline_share)
        self.open.append(_Slice(now, online))
        expected = sum(self.slices[: index + 1])
        self.opened.append(WaveOpened(self.waves[index], now, expected))

    def advance(self, start: float, end: float) -> None:
        for wave in self.open:
            begun = wave.started(start, end, self.fleet.poll_interval_s, self.rng)
            if begun:
                wave.installing.append((end + self.fleet.install_s, begun))
                self.tally.in_flight += begun
            self._finish(wave, end)

    def _finish(self, wave: _Slice, now: float) -> None:
        while wave.installing and wave.installing[0][0] <= now:
            _, count = wave.installing.popleft()
            failed = binomial(self.rng, count, self.fleet.fail_rate)
            self.tally.failed += failed
            self.tally.success += count - failed
            self.tally.in_flight -= count

    def evaluate(self, now: float) -> None:
        soaked = now - self.opened[-1].opened_at_s
        gates = evaluate_gates(
            self.plan.gates,
            self.tally.counts(self.opened[-1].devices),
            soaked_s=soaked,
            blocking_issues=0,
        )
        decision = decide(
            gates,
            wave_index=self.wave_index,
            waves=self.waves,
            in_window=may_advance_now(self.plan.windows, self.start + timedelta(seconds=now)),
            rate_ok=soaked >= self._rate_wait_s(),
        )
        if decision.event is not None:
            self._apply(decision.event, decision.note, now)

    def _rate_wait_s(self) -> float:
        if self.wave_index + 1 >= len(self.waves):
            return 0.0
        current, following = self.waves[self.wave_index], self.waves[self.wave_index + 1]
        return rate_wait_s(self.fleet.devices, current, following, self.plan.rate_per_minute)

    def _apply(self, event: RolloutEvent, note: str, now: float) -> None:
        self.state = next_state(self.state, event)
        if event is RolloutEvent.ADVANCE:
            self.open_wave(now)
        if event is RolloutEvent.PAUSE:
            self.stop_reason = note

    def result(self, now: float) -> Rehearsal:
        paused = self.state is RolloutState.PAUSED
        finished = self.tally.success + self.tally.failed
        return Rehearsal(
            state=self.state.value,
            waves=self.opened,
            ended_at_s=now,
            stopped_in_wave=self.wave_index if paused else None,
            stop_reason=self.stop_reason,
            reached=finished + self.tally.in_flight,
            finished=finished,
            failed=self.tally.failed,
            in_flight=self.tally.in_flight,
        )


# --------------------------------------------------------------------------- weekly trains


@dataclass(frozen=True)
class Trains:
    """Many weekly trains, a share of them carrying a bad build."""

    count: int
    bad_share: float = 0.2
    bad_fail_rate: float = 0.3
    good_fail_rate: float = 0.005
    internal_share: float = 0.001  # of the fleet, in the internal ring
    preview_share: float = 0.01
    schedule: TrainSchedule = field(default_factory=TrainSchedule)


@dataclass(frozen=True)
class TrainsSummary:
    trains: int
    bad: int
    good: int
    bad_stopped_before_stable: int  # paused in internal or preview: no stable device touched
    bad_stopped_in_first_stable_wave: int
    bad_reached_stable_devices_mean: float
    good_held: int  # a gate paused a good build somewhere in the train (a false stop)
    unfinished: int  # still going at the horizon

    @property
    def bad_stopped_before_stable_share(self) -> float:
        return self.bad_stopped_before_stable / self.bad if self.bad else 1.0

    @property
    def good_held_share(self) -> float:
        return self.good_held / self.good if self.good else 0.0


@dataclass(frozen=True)
class _TrainRun:
    bad: bool
    stopped_at: Stage | None
    stopped_in_wave: int | None
    stable_reached: int
    unfinished: bool


RINGS: tuple[Stage, ...] = (Stage.INTERNAL, Stage.PREVIEW, Stage.STABLE)


def rehearse_trains(fleet: Fleet, plan: Plan, trains: Trains, *, seed: int) -> TrainsSummary:
    """Run `trains.count` weekly trains (internal, preview, stable) over `fleet`."""
    rng = random.Random(seed)
    week = DEFAULT_START
    runs = []
    for _ in range(trains.count):
        bad = rng.random() < trains.bad_share
        rate = trains.bad_fail_rate if bad else trains.good_fail_rate
        runs.append(_one_train(replace(fleet, fail_rate=rate), plan, trains, week, rng, bad))
        week += timedelta(days=7)
    return _summary(runs)


def _one_train(
    fleet: Fleet, plan: Plan, trains: Trains, week: datetime, rng: random.Random, bad: bool
) -> _TrainRun:
    stage, done_at = Stage.ANNOUNCED, trains.schedule.due_at(week.date(), Stage.ANNOUNCED)
    for ring in RINGS:
        start = _stage_start(trains.schedule, week, stage, done_at)
        result = rehearse(_ring(fleet, trains, ring), _ring_plan(plan, trains, ring),
                          seed=rng.getrandbits(64), start=start)  # fmt: skip
        if result.state != RolloutState.COMPLETED.value:
            stable = result.reached if ring is Stage.STABLE else 0
            stopped = ring if result.stopped_in_wave is not None else None
            unfinished = stopped is None
            return _TrainRun(bad, stopped, result.stopped_in_wave, stable, unfinished)
        stage, done_at = ring, start + timedelta(seconds=result.ended_at_s)
    return _TrainRun(bad, None, None, fleet.devices, False)


def _stage_start(
    schedule: TrainSchedule, week: datetime, stage: Stage, done_at: datetime
) -> datetime:
    """When the train enters the stage after `stage`: its slot, once the ring before it passed."""
    due = schedule.due_at(week.date(), _following(stage))
    start = max(due, done_at)
    step = train_step(schedule, week_of=week.date(), stage=stage, now=start, previous_done=True)
    assert step.stage is not None, step.why  # the slot has come by construction
    return start


def _following(stage: Stage) -> Stage:
    order = list(Stage)
    return order[order.index(stage) + 1]


def _ring(fleet: Fleet, trains: Trains, ring: Stage) -> Fleet:
    shares = {Stage.INTERNAL: trains.internal_share, Stage.PREVIEW: trains.preview_share}
    if ring in shares:
        return replace(fleet, devices=round(fleet.devices * shares[ring]))
    return fleet


def _ring_plan(plan: Plan, trains: Trains, ring: Stage) -> Plan:
    waves = {
        Stage.INTERNAL: trains.schedule.internal_waves,
        Stage.PREVIEW: trains.schedule.preview_waves,
    }
    return replace(plan, waves=waves[ring]) if ring in waves else plan


def _summary(runs: list[_TrainRun]) -> TrainsSummary:
    bad = [run for run in runs if run.bad]
    good = [run for run in runs if not run.bad]
    before_stable = [run for run in bad if run.stopped_at in (Stage.INTERNAL, Stage.PREVIEW)]
    first_stable = [
        run for run in bad if run.stopped_at is Stage.STABLE and run.stopped_in_wave == 0
    ]
    return TrainsSummary(
        trains=len(runs),
        bad=len(bad),
        good=len(good),
        bad_stopped_before_stable=len(before_stable),
        bad_stopped_in_first_stable_wave=len(first_stable),
        bad_reached_stable_devices_mean=(
            sum(run.stable_reached for run in bad) / len(bad) if bad else 0.0
        ),
        good_held=sum(run.stopped_at is not None for run in good),
        unfinished=sum(run.unfinished for run in runs),
    )


# --------------------------------------------------------------------------- reading options

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `30m`, `6h` or `2d`."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:], 0.0)
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"a duration is a number with s, m, h or d, not {text!r}") from None
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, not {text!r}")
    return seconds


def parse_waves(text: str) -> tuple[float, ...]:
    """`1,10,50,100` as a checked wave plan."""
    return check_waves([float(part) for part in text.split(",") if part.strip()])


# --------------------------------------------------------------------------- reporting


def rehearsal_json(result: Rehearsal, start: datetime) -> dict[str, object]:
    """One JSON-ready object: the waves with their opening times, the stop and the reach."""
    return {
        "state": result.state,
        "waves": [
            {**vars(wave), "opened_at": _at(start, wave.opened_at_s)} for wave in result.waves
        ],
        "ended_at_s": result.ended_at_s,
        "ended_at": _at(start, result.ended_at_s),
        "stopped_in_wave": result.stopped_in_wave,
        "stop_reason": result.stop_reason,
        "reached": result.reached,
        "finished": result.finished,
        "failed": result.failed,
        "in_flight": result.in_flight,
    }


def trains_json(summary: TrainsSummary) -> dict[str, object]:
    return {
        **vars(summary),
        "bad_stopped_before_stable_share": summary.bad_stopped_before_stable_share,
        "good_held_share": summary.good_held_share,
    }


def describe(result: Rehearsal, start: datetime) -> list[str]:
    """The rehearsal as lines a release engineer reads."""
    lines = [
        f"wave {wave.percentage:g} % opens at {_elapsed(wave.opened_at_s)} "
        f"({_at(start, wave.opened_at_s)}): {wave.devices} devices"
        for wave in result.waves
    ]
    reach = (
        f"{result.reached} devices got the build ({result.failed} failed, "
        f"{result.in_flight} still installing)"
    )
    if result.stopped_in_wave is not None:
        wave = result.waves[result.stopped_in_wave].percentage
        lines.append(
            f"a gate stops it at {_elapsed(result.ended_at_s)} in wave {wave:g} %: "
            f"{result.stop_reason}"
        )
        lines.append(f"before it stopped, {reach}")
    elif result.state == RolloutState.COMPLETED.value:
        lines.append(f"completed at {_elapsed(result.ended_at_s)}; {reach}")
    else:
        lines.append(f"still active at the horizon {_elapsed(result.ended_at_s)}; {reach}")
    return lines


def describe_trains(summary: TrainsSummary) -> list[str]:
    return [
        f"{summary.trains} weekly trains: {summary.bad} bad builds, {summary.good} good",
        (
            f"bad builds stopped before the first stable wave: {summary.bad_stopped_before_stable}"
            f" ({summary.bad_stopped_before_stable_share:.0%}); in the first stable wave: "
            f"{summary.bad_stopped_in_first_stable_wave}"
        ),
        (
            f"stable devices a bad build reached, on average: "
            f"{summary.bad_reached_stable_devices_mean:.1f}"
        ),
        (
            f"good builds held by a gate (false stops): {summary.good_held}"
            f" ({summary.good_held_share:.0%}); unfinished at the horizon: {summary.unfinished}"
        ),
    ]


def _elapsed(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"+{hours}h{rest // 60:02d}m"


def _at(start: datetime, seconds: float) -> str:
    return (start + timedelta(seconds=seconds)).isoformat()
