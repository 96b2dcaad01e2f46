"""The pure rollout rules: waves, the state table, gates (hypothesis), windows, rate, train."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.services.rollout_rules import (
    TRANSITIONS,
    Counts,
    GateConfig,
    Outcome,
    RolloutError,
    RolloutEvent,
    RolloutState,
    TimeWindow,
    Verdict,
    check_waves,
    classify,
    decide,
    evaluate_gates,
    exponential_waves,
    may_advance_now,
    next_state,
    rate_wait_s,
)
from server.services.train_rules import Stage, TrainSchedule, train_step
from wire import FailureReason, UpdateState
from wire.rollout import in_rollout

counts_st = st.builds(
    Counts,
    success=st.integers(0, 200),
    rolled_back=st.integers(0, 50),
    failed=st.integers(0, 50),
    in_progress=st.integers(0, 50),
    expected=st.integers(0, 400),
)
gates_st = st.builds(
    GateConfig,
    min_success_rate=st.floats(0, 1),
    max_rollback_rate=st.floats(0, 1),
    min_devices=st.integers(0, 30),
    min_soak_s=st.sampled_from([0.0, 60.0]),
    max_blocking_issues=st.integers(0, 2),
)


# --------------------------------------------------------------------------- gates


@given(gates_st, counts_st, st.integers(1, 20), st.integers(0, 3), st.booleans())
def test_more_failures_never_turn_a_failing_gate_into_a_passing_one(
    config: GateConfig, counts: Counts, extra: int, blocking: int, as_rollback: bool
) -> None:
    before = evaluate_gates(config, counts, soaked_s=100.0, blocking_issues=blocking)
    more = (
        Counts(counts.success, counts.rolled_back + extra, counts.failed, 0, counts.expected)
        if as_rollback
        else Counts(counts.success, counts.rolled_back, counts.failed + extra, 0, counts.expected)
    )
    after = evaluate_gates(config, more, soaked_s=100.0, blocking_issues=blocking)
    if before.verdict is Verdict.FAIL:
        assert after.verdict is Verdict.FAIL


@given(gates_st, counts_st, st.integers(0, 3))
def test_more_blocking_issues_never_help(config: GateConfig, counts: Counts, blocking: int) -> None:
    before = evaluate_gates(config, counts, soaked_s=100.0, blocking_issues=blocking)
    after = evaluate_gates(config, counts, soaked_s=100.0, blocking_issues=blocking + 1)
    if before.verdict is Verdict.FAIL:
        assert after.verdict is Verdict.FAIL


@given(st.integers(1, 100), st.integers(0, 100))
def test_the_success_rate_is_exact_at_the_boundary(finished: int, successes: int) -> None:
    successes = min(successes, finished)
    rate = successes / finished
    counts = Counts(success=successes, failed=finished - successes, expected=finished)
    config = GateConfig(min_success_rate=rate, max_rollback_rate=1, min_devices=0, min_soak_s=0)
    assert evaluate_gates(config, counts, soaked_s=0, blocking_issues=0).verdict is Verdict.PASS
    if successes < finished:
        stricter = GateConfig(
            min_success_rate=(successes + 1) / finished,
            max_rollback_rate=1,
            min_devices=0,
            min_soak_s=0,
        )
        result = evaluate_gates(stricter, counts, soaked_s=0, blocking_issues=0)
        assert (result.verdict, result.gate) == (Verdict.FAIL, "success_rate")


@given(st.integers(1, 100), st.integers(0, 100))
def test_the_rollback_rate_is_exact_at_the_boundary(finished: int, rolled: int) -> None:
    rolled = min(rolled, finished)
    counts = Counts(success=finished - rolled, rolled_back=rolled, failed=3, expected=finished)
    at = GateConfig(  # failed devices (not booted) are not in the rollback rate's denominator
        min_success_rate=0, max_rollback_rate=rolled / finished, min_devices=0, min_soak_s=0
    )
    assert evaluate_gates(at, counts, soaked_s=0, blocking_issues=0).verdict is Verdict.PASS
    if rolled:
        below = GateConfig(
            min_success_rate=0,
            max_rollback_rate=(rolled - 1) / finished,
            min_devices=0,
            min_soak_s=0,
        )
        result = evaluate_gates(below, counts, soaked_s=0, blocking_issues=0)
        assert (result.verdict, result.gate) == (Verdict.FAIL, "rollback_rate")


def test_minimum_devices_and_soak_hold_a_good_wave() -> None:
    config = GateConfig(min_devices=5, min_soak_s=60)
    few = Counts(success=4, expected=10)
    assert evaluate_gates(config, few, soaked_s=600, blocking_issues=0).gate == "min_devices"
    enough = Counts(success=5, expected=10)
    held = evaluate_gates(config, enough, soaked_s=59.9, blocking_issues=0)
    assert (held.verdict, held.gate) == (Verdict.WAIT, "min_soak_s")
    assert evaluate_gates(config, enough, soaked_s=60, blocking_issues=0).verdict is Verdict.PASS


def test_minimum_devices_is_capped_by_the_devices_the_wave_reaches() -> None:
    config = GateConfig(min_devices=10, min_soak_s=0)
    small_wave = Counts(success=2, expected=2)
    assert evaluate_gates(config, small_wave, soaked_s=0, blocking_issues=0).verdict is Verdict.PASS


def test_a_blocking_issue_fails_and_an_override_lets_it_through() -> None:
    counts = Counts(success=10, expected=10)
    config = GateConfig(min_devices=1, min_soak_s=0)
    result = evaluate_gates(config, counts, soaked_s=0, blocking_issues=1)
    assert (result.verdict, result.gate, result.value) == (Verdict.FAIL, "blocking_issues", 1)
    ignored = evaluate_gates(
        config, counts, soaked_s=0, blocking_issues=1, ignore=frozenset({"blocking_issues"})
    )
    assert ignored.verdict is Verdict.PASS


def test_failures_fail_early_once_the_threshold_is_out_of_reach() -> None:
    config = GateConfig(min_success_rate=0.9, min_devices=10, min_soak_s=0)
    counts = Counts(success=0, rolled_back=2, expected=10)  # at best 8/10 < 0.9
    result = evaluate_gates(config, counts, soaked_s=0, blocking_issues=0)
    assert (result.verdict, result.gate) == (Verdict.FAIL, "success_rate")


@pytest.mark.parametrize(
    ("state", "silent_s", "outcome"),
    [
        (UpdateState.COMMITTED, 9999, Outcome.SUCCESS),
        (UpdateState.ROLLED_BACK, 0, Outcome.ROLLED_BACK),
        (UpdateState.FAILED, 0, Outcome.FAILED),
        (UpdateState.DOWNLOADING, 10, Outcome.IN_PROGRESS),
        (UpdateState.TRIAL, 61, Outcome.STUCK),
        (UpdateState.DEFERRED, 9999, Outcome.NOT_STARTED),
    ],
)
def test_a_device_that_started_and_went_silent_is_stuck(
    state: UpdateState, silent_s: float, outcome: Outcome
) -> None:
    assert classify(state, timedelta(seconds=silent_s), timedelta(seconds=60)) is outcome
    assert Counts.tally([Outcome.STUCK], 1).failed == 1


# --------------------------------------------------------------------------- waves, table


@given(st.lists(st.floats(0.01, 99.99), min_size=0, max_size=6, unique=True))
def test_a_checked_wave_plan_increases_to_100(raw: list[float]) -> None:
    plan = check_waves([*sorted(raw), 100.0])
    assert plan[-1] == 100
    assert list(plan) == sorted(set(plan))


@pytest.mark.parametrize("waves", [[], [10, 5, 100], [1, 10, 50], [0, 100], [50, 50, 100]])
def test_bad_wave_plans_are_refused(waves: list[float]) -> None:
    with pytest.raises(RolloutError):
        check_waves(waves)


@given(st.floats(0.01, 100), st.floats(1.01, 10))
def test_exponential_waves_end_at_100(first: float, factor: float) -> None:
    waves = exponential_waves(first, factor)
    assert waves[0] == pytest.approx(first)
    assert waves[-1] == 100


@given(
    st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60, unique=True),
    st.lists(st.floats(0.01, 99.99), min_size=1, max_size=5, unique=True),
)
def test_a_device_in_one_wave_is_in_every_later_wave(devices: list[str], raw: list[float]) -> None:
    waves = check_waves([*sorted(raw), 100.0])
    for earlier, later in itertools.pairwise(waves):
        for device in devices:
            if in_rollout(device, "r", earlier):
                assert in_rollout(device, "r", later)


def test_every_state_is_reachable_and_the_ends_are_final() -> None:
    reached = {RolloutState.ACTIVE} | set(TRANSITIONS.values())
    assert reached == set(RolloutState)
    for end in (RolloutState.ABORTED, RolloutState.COMPLETED):
        for event in RolloutEvent:
            with pytest.raises(RolloutError):
                next_state(end, event)
    assert next_state(RolloutState.PAUSED, RolloutEvent.RESUME) is RolloutState.ACTIVE


def test_decide_pauses_on_failure_and_advances_only_in_window_and_rate() -> None:
    ok = evaluate_gates(
        GateConfig(min_devices=0, min_soak_s=0), Counts(), soaked_s=0, blocking_issues=0
    )
    bad = evaluate_gates(GateConfig(), Counts(), soaked_s=0, blocking_issues=1)
    waves = (1.0, 10.0, 100.0)
    assert decide(bad, wave_index=0, waves=waves, in_window=False, rate_ok=False).event is (
        RolloutEvent.PAUSE
    )
    assert decide(ok, wave_index=0, waves=waves, in_window=True, rate_ok=True).event is (
        RolloutEvent.ADVANCE
    )
    assert decide(ok, wave_index=0, waves=waves, in_window=False, rate_ok=True).event is None
    assert decide(ok, wave_index=0, waves=waves, in_window=True, rate_ok=False).event is None
    assert decide(ok, wave_index=2, waves=waves, in_window=True, rate_ok=True).event is (
        RolloutEvent.COMPLETE
    )


# --------------------------------------------------------------------------- windows, rate


def test_windows_wrap_midnight() -> None:
    night = TimeWindow.parse("22:00-04:00")
    assert night.contains(time(23, 30))
    assert night.contains(time(3, 59))
    assert not night.contains(time(4, 0))
    assert not night.contains(time(12, 0))
    at = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
    assert may_advance_now([TimeWindow.parse("00:00-04:00")], at)
    assert not may_advance_now([TimeWindow.parse("00:00-04:00")], at + timedelta(hours=4))
    assert may_advance_now([], at)
    with pytest.raises(RolloutError):
        TimeWindow.parse("midnight")


@given(st.integers(0, 10_000), st.floats(1, 50), st.floats(50, 100), st.floats(0.1, 1000))
def test_the_rate_spreads_the_added_devices(
    fleet: int, current: float, following: float, per_minute: float
) -> None:
    wait = rate_wait_s(fleet, current, following, per_minute)
    added = fleet * (following - current) / 100
    assert wait >= added / per_minute * 60 - 1e-6
    assert rate_wait_s(fleet, current, following, 0) == 0


# --------------------------------------------------------------------------- the train


def test_the_train_follows_the_week_and_waits_for_the_ring_before() -> None:
    schedule = TrainSchedule()
    week = date(2026, 11, 23)  # a Monday
    wednesday = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    early = train_step(
        schedule, week_of=week, stage=Stage.NEW, now=wednesday - timedelta(1), previous_done=True
    )
    assert early.stage is None
    assert (
        train_step(schedule, week_of=week, stage=Stage.NEW, now=wednesday, previous_done=True).stage
        is Stage.ANNOUNCED
    )
    friday = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    held = train_step(schedule, week_of=week, stage=Stage.INTERNAL, now=friday, previous_done=False)
    assert held.stage is None
    assert "gates" in held.why
    assert (
        train_step(
            schedule, week_of=week, stage=Stage.INTERNAL, now=friday, previous_done=True
        ).stage
        is Stage.PREVIEW
    )
    forced = train_step(
        schedule, week_of=week, stage=Stage.PREVIEW, now=wednesday, previous_done=False, force=True
    )
    assert forced.stage is None  # force skips the day, never the gates
    assert (
        train_step(schedule, week_of=week, stage=Stage.STABLE, now=friday, previous_done=True).stage
        is None
    )


@given(st.dates(date(2020, 1, 1), date(2035, 1, 1)))
def test_the_stages_are_due_in_order_within_the_week(day: date) -> None:
    schedule = TrainSchedule()
    due = [
        schedule.due_at(day, s)
        for s in (Stage.ANNOUNCED, Stage.INTERNAL, Stage.PREVIEW, Stage.STABLE)
    ]
    assert due == sorted(due)
    assert due[0].weekday() == 2
    assert due[-1].weekday() == 4
    assert due[0].date() - timedelta(days=2) <= day + timedelta(days=6)


@pytest.mark.parametrize("reason", [FailureReason.WRONG_CHANNEL, FailureReason.WRONG_MODEL])
def test_a_refusal_of_a_build_offered_to_the_wrong_device_is_not_a_failure(
    reason: FailureReason,
) -> None:
    quiet, stuck = timedelta(seconds=1), timedelta(hours=1)
    assert classify(UpdateState.FAILED, quiet, stuck, reason) is Outcome.NOT_STARTED
    assert classify(UpdateState.FAILED, quiet, stuck, FailureReason.HASH_MISMATCH) is Outcome.FAILED


def test_a_failure_the_device_will_try_again_is_still_in_progress_until_it_goes_silent() -> None:
    stuck = timedelta(hours=1)
    again = {"retrying": True}
    failed = UpdateState.FAILED
    assert classify(failed, timedelta(seconds=1), stuck, FailureReason.DOWNLOAD, **again) is (
        Outcome.IN_PROGRESS
    )
    assert classify(failed, timedelta(hours=2), stuck, FailureReason.DOWNLOAD, **again) is (
        Outcome.STUCK
    )
    assert classify(failed, timedelta(seconds=1), stuck, FailureReason.DOWNLOAD) is Outcome.FAILED
