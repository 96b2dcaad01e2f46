from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wire.rollout import BUCKETS, bucket, in_rollout

ids = st.text(min_size=1, max_size=40)
pcts = st.floats(min_value=0, max_value=100, allow_nan=False)


@given(ids, ids)
def test_bucket_is_stable_and_in_range(device_id: str, rollout_id: str) -> None:
    b = bucket(device_id, rollout_id)
    assert 0 <= b < BUCKETS
    assert b == bucket(device_id, rollout_id)


@given(ids, ids, pcts, pcts)
def test_a_device_in_a_wave_is_in_every_later_wave(
    device_id: str, rollout_id: str, p1: float, p2: float
) -> None:
    low, high = sorted((p1, p2))
    if in_rollout(device_id, rollout_id, low):
        assert in_rollout(device_id, rollout_id, high)


@given(ids, ids)
def test_zero_is_nobody_and_hundred_is_everybody(device_id: str, rollout_id: str) -> None:
    assert not in_rollout(device_id, rollout_id, 0)
    assert in_rollout(device_id, rollout_id, 100)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([1.0, 10.0, 50.0]), st.text(min_size=1, max_size=8))
def test_about_the_right_share_of_a_large_fleet(pct: float, rollout_id: str) -> None:
    fleet = [f"device-{i}" for i in range(20_000)]
    share = sum(in_rollout(d, rollout_id, pct) for d in fleet) / len(fleet) * 100
    # binomial standard deviation at 20k devices is at most 0.36 points; allow ~5 sigma
    assert abs(share - pct) < 1.8


def test_different_rollouts_pick_different_devices() -> None:
    fleet = [f"device-{i}" for i in range(2_000)]
    first = {d for d in fleet if in_rollout(d, "rollout-1", 10)}
    second = {d for d in fleet if in_rollout(d, "rollout-2", 10)}
    assert first != second
