"""Rehearsing a rollout plan in simulated time, over the server's own pure rules."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lab.cli import app
from lab.rehearsal import (
    Fleet,
    Plan,
    Trains,
    binomial,
    parse_duration,
    rehearse,
    rehearse_trains,
    wave_slices,
)

fleets = st.builds(
    Fleet,
    devices=st.integers(min_value=0, max_value=200_000),
    poll_interval_s=st.sampled_from([600.0, 3600.0, 6 * 3600.0]),
    offline_share=st.floats(min_value=0, max_value=0.5),
    fail_rate=st.floats(min_value=0, max_value=1),
)


@settings(max_examples=40, deadline=None)
@given(fleet=fleets, seed=st.integers(min_value=0, max_value=2**32))
def test_a_stopped_build_reaches_no_more_than_the_wave_it_was_stopped_in(
    fleet: Fleet, seed: int
) -> None:
    result = rehearse(fleet, Plan(), seed=seed)
    last_wave = result.waves[-1].devices
    assert result.reached <= last_wave
    assert result.finished + result.in_flight == result.reached
    if result.stopped_in_wave is not None:
        assert result.state == "paused"
        assert result.stopped_in_wave == len(result.waves) - 1
        assert result.failed > 0


@settings(max_examples=30, deadline=None)
@given(fleet=fleets, seed=st.integers(min_value=0, max_value=2**32))
def test_with_no_failures_no_gate_stops_and_every_wave_opens(fleet: Fleet, seed: int) -> None:
    result = rehearse(
        Fleet(fleet.devices, fleet.poll_interval_s, fleet.offline_share), Plan(), seed=seed
    )
    assert result.stopped_in_wave is None
    assert result.failed == 0
    if result.state == "completed":
        assert [wave.percentage for wave in result.waves] == [1.0, 10.0, 50.0, 100.0]
        assert result.waves[-1].devices == fleet.devices


def stopped_share(fail_rate: float, devices: int = 500, runs: int = 60) -> float:
    fleet = Fleet(devices, 3600.0, 0.1, fail_rate)
    stops = sum(rehearse(fleet, Plan(), seed=seed).state == "paused" for seed in range(runs))
    return stops / runs


def test_the_share_of_stopped_rollouts_rises_with_the_fail_rate() -> None:
    shares = [stopped_share(rate) for rate in (0.0, 0.002, 0.02, 0.1, 0.5)]
    assert shares == sorted(shares)
    assert shares[0] == 0.0
    assert shares[-1] > 0.8  # the rest wait for offline devices of a tiny first wave


@settings(max_examples=10, deadline=None)
@given(low=st.floats(min_value=0, max_value=0.3), gap=st.floats(min_value=0.3, max_value=0.7))
def test_a_clearly_higher_fail_rate_never_stops_fewer_rollouts(low: float, gap: float) -> None:
    assert stopped_share(low, runs=20) <= stopped_share(low + gap, runs=20)


@given(
    trials=st.integers(min_value=0, max_value=10**7),
    chance=st.floats(min_value=0, max_value=1),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_a_binomial_sample_stays_within_its_trials(trials: int, chance: float, seed: int) -> None:
    assert 0 <= binomial(random.Random(seed), trials, chance) <= trials


@given(
    devices=st.integers(min_value=0, max_value=10**7), seed=st.integers(min_value=0, max_value=99)
)
def test_wave_slices_share_out_the_whole_fleet(devices: int, seed: int) -> None:
    slices = wave_slices(devices, (1.0, 10.0, 50.0, 100.0), random.Random(seed))
    assert sum(slices) == devices
    assert all(count >= 0 for count in slices)


def test_a_million_devices_rehearse_as_groups() -> None:
    # Groups, not a million device objects: the first wave holds 1 % of the fleet.
    result = rehearse(Fleet(1_000_000, 6 * 3600.0, 0.1, 0.01), Plan(), seed=5)
    assert 9_000 < result.waves[0].devices < 11_000


def test_trains_stop_bad_builds_before_stable_and_count_false_stops() -> None:
    fleet = Fleet(100_000, 6 * 3600.0, 0.1)
    summary = rehearse_trains(fleet, Plan(), Trains(40, bad_share=0.5, good_fail_rate=0.0), seed=2)
    assert summary.bad + summary.good == 40
    assert summary.bad_stopped_before_stable == summary.bad > 0
    assert summary.good_held == 0


def test_durations_read_units() -> None:
    assert parse_duration("6h") == 21600
    assert parse_duration("30m") == 1800
    assert parse_duration("90") == 90


def test_cli_prints_one_json_object_for_a_plan() -> None:
    args = ["simulate", "--plan", "--devices", "100000", "--poll-interval", "6h"]
    args += ["--offline", "0.1", "--fail-rate", "0.3", "--waves", "1,10,50,100", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["state"] == "paused"
    assert answer["stopped_in_wave"] == 0
    assert answer["waves"][0]["percentage"] == 1.0
    assert 0 < answer["reached"] <= answer["waves"][0]["devices"]


def test_cli_reports_trains_as_json() -> None:
    args = ["simulate", "--plan", "--devices", "20000", "--trains", "10", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["trains"] == 10
    assert 0 <= answer["good_held_share"] <= 1


def test_cli_refuses_a_bad_wave_plan() -> None:
    result = CliRunner().invoke(app, ["simulate", "--plan", "--waves", "10,5"])
    assert result.exit_code != 0
