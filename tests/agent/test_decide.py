"""The runner's pure decisions against the state table and the simulated bootloader's rules:
whatever the journal says and whatever the bootloader did, the event the runner is told is one
the table takes from where the update stands."""

from __future__ import annotations

import functools

from hypothesis import assume, given
from hypothesis import strategies as st

from agent.decide import (
    DeviceFacts,
    abandon_event,
    observe,
    running_version,
    slot_still_unbootable,
    why_not,
)
from agent.journal import JournalRecord
from agent.machine import RESTING, Event, allowed_events, next_state
from hardware.bootcontrol import Slot
from hardware.sim_env import BootEnv, arm_trial, boot_status, provisioned_env
from hardware.testing import BootRequest, apply_boot_request
from wire import AvailabilityNotice, FailureReason
from wire import UpdateState as S

slots = st.sampled_from(list(Slot))
states = st.sampled_from(list(S))
boot_requests: st.SearchStrategy[list[BootRequest]] = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["arm", "bad"]), slots),
        st.tuples(st.sampled_from(["good", "power_on"]), st.none()),
    ),
    max_size=25,
)


@st.composite
def boot_envs(draw: st.DrawFn) -> BootEnv:
    """A bootloader environment the simulated device can reach: a provisioned one, maybe a
    trial of the other slot armed, then any of the OS's requests and power-ons."""
    env = provisioned_env(draw(st.integers(1, 3)), "m")
    if draw(st.booleans()):
        env = arm_trial(env, Slot.B)
    return functools.reduce(apply_boot_request, draw(boot_requests), env)


def record(state: S, target: Slot | str = "", **changes: object) -> JournalRecord:
    return JournalRecord(state=state, target_slot=str(target), **changes)  # type: ignore[arg-type]


@given(states, slots, boot_envs())
def test_observe_only_says_what_the_table_takes(state: S, target: Slot, env: BootEnv) -> None:
    event = observe(record(state, target), boot_status(env))
    assert event is None or event in allowed_events(state)


@given(st.sampled_from([S.TRIAL, S.ROLLING_BACK]), slots, boot_envs())
def test_off_the_target_slot_means_the_bootloader_fell_back(
    state: S, target: Slot, env: BootEnv
) -> None:
    event = observe(record(state, target), boot_status(env))
    assert (event is Event.BOOTED_OLD_SLOT) == (env.active is not target)


@given(slots, boot_envs())
def test_a_trial_slot_that_became_committed_was_marked_good(target: Slot, env: BootEnv) -> None:
    event = observe(record(S.TRIAL, target), boot_status(env))
    committed_target = env.active is target and env.committed is target
    assert (event is Event.HEALTH_PASSED) == committed_target


@given(boot_envs())
def test_after_the_reboot_the_armed_slot_runs_or_the_old_one_does(env: BootEnv) -> None:
    assume(env.active is env.committed)  # an update starts only off trial
    armed = arm_trial(env, env.committed.other)
    target = armed.trial
    assert target is not None
    status = boot_status(armed)
    assert observe(record(S.REBOOTING, target), status) is None  # the power went first
    booted = apply_boot_request(armed, ("power_on", None))
    event = observe(record(S.REBOOTING, target), boot_status(booted))
    expected = Event.BOOTED_NEW_SLOT if booted.active is target else Event.BOOTED_OLD_SLOT
    assert event is expected


@given(states, boot_envs())
def test_nothing_is_observed_where_no_boot_matters(state: S, env: BootEnv) -> None:
    if state in (S.REBOOTING, S.TRIAL, S.ROLLING_BACK):
        assert observe(record(state), boot_status(env)) is None  # no target slot journaled
    else:
        assert observe(record(state, Slot.B), boot_status(env)) is None


def test_a_cancel_abandons_every_update_in_progress_the_way_the_table_says() -> None:
    for state in S:
        event = abandon_event(state)
        if state in RESTING or state is S.ROLLING_BACK:
            assert event is None
            continue
        assert event is Event.CANCELLED
        after = next_state(state, event)
        assert after is (S.FAILED if slot_still_unbootable(state) else S.ROLLING_BACK)


# --------------------------------------------------------------------------- eligibility

DEVICE = DeviceFacts(device_id="dev-1", model="m", running_version="1.0", on_trial=False)


def notice(**changes: object) -> AvailabilityNotice:
    fields: dict[str, object] = {
        "release_version": "2.0",
        "target_path": "m/stable/2.0/rom.img",
        "channel": "stable",
        "model": "m",
        "rollout_id": "r1",
        "percentage": 100.0,
    }
    return AvailabilityNotice(**{**fields, **changes})  # type: ignore[arg-type]


@given(states, st.booleans(), st.booleans(), st.sampled_from(["m", "other"]), st.booleans())
def test_an_update_starts_only_at_rest_for_this_model_off_trial(
    state: S, paused: bool, on_trial: bool, model: str, force: bool
) -> None:
    facts = DeviceFacts("dev-1", "m", "1.0", on_trial)
    answer = why_not(notice(paused=paused, model=model), record(state), facts, force=force)
    if answer is None:
        assert state in RESTING
        assert (paused, on_trial, model) == (False, False, "m")


@given(st.sampled_from([S.FAILED, S.ROLLED_BACK]), st.sampled_from(["r1", "r2"]), st.booleans())
def test_a_cancelled_update_waits_for_a_new_notice(state: S, rollout: str, force: bool) -> None:
    cancelled = record(
        state,
        Slot.B,
        target_path=notice().target_path,
        rollout_id="r1",
        reason=FailureReason.CANCELLED,
    )
    answer = why_not(notice(rollout_id=rollout), cancelled, DEVICE, force=force)
    same_notice = rollout == "r1"
    assert (answer == "this update was cancelled here") == (same_notice and not force)
    assert why_not(notice(target_path="m/stable/2.1/rom.img"), cancelled, DEVICE) is None


def test_a_build_that_failed_here_is_not_tried_again_unless_forced() -> None:
    failed = record(S.FAILED, target_path=notice().target_path, detail={"final": True})
    assert why_not(notice(), failed, DEVICE) == "this build already failed here"
    assert why_not(notice(rollout_id="r2"), failed, DEVICE) == "this build already failed here"
    assert why_not(notice(), failed, DEVICE, force=True) is None


@given(boot_envs(), st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["1", "2"])))
def test_the_running_version_is_the_active_slots(env: BootEnv, versions: dict[str, str]) -> None:
    journal = JournalRecord(current_version="0", slot_versions=versions)
    expected = versions.get(env.active.value, "0")
    assert running_version(journal, boot_status(env)) == expected
