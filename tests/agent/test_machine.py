"""The state table: every state reachable, every step has a way out, nothing undefined."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.machine import (
    FAILURE_TARGETS,
    RESTING,
    TRANSITIONS,
    Event,
    InvalidTransitionError,
    allowed_events,
    is_resting,
    next_state,
)
from wire import UpdateState as S


def reachable_from(start: S) -> set[S]:
    seen = {start}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        for (source, _event), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_happy_path() -> None:
    path = [
        Event.UPDATE_FOUND,
        Event.DOWNLOAD_DONE,
        Event.TRIAL_ARMED,
        Event.BOOTED_NEW_SLOT,
        Event.HEALTH_PASSED,
    ]
    state = S.IDLE
    for event in path:
        state = next_state(state, event)
    assert state is S.COMMITTED


def test_a_failed_trial_rolls_back_through_the_old_slot() -> None:
    state = S.TRIAL
    for event in (Event.HEALTH_FAILED, Event.BOOTED_OLD_SLOT):
        state = next_state(state, event)
    assert state is S.ROLLED_BACK


def test_an_update_may_start_from_every_resting_state_only() -> None:
    for state in S:
        assert ((state, Event.UPDATE_FOUND) in TRANSITIONS) == is_resting(state)
    assert frozenset({S.IDLE, S.COMMITTED, S.ROLLED_BACK, S.FAILED, S.DEFERRED}) == RESTING


def test_an_undefined_pair_raises() -> None:
    with pytest.raises(InvalidTransitionError, match="downloading"):
        next_state(S.DOWNLOADING, Event.HEALTH_PASSED)
    with pytest.raises(InvalidTransitionError):
        next_state(S.COMMITTED, Event.BOOTED_OLD_SLOT)


def test_every_state_is_reachable_from_idle() -> None:
    assert reachable_from(S.IDLE) == set(S)


def test_a_resting_state_is_reachable_from_every_state() -> None:
    for state in S:
        assert reachable_from(state) & RESTING, state


def test_every_step_in_progress_has_a_failure_edge() -> None:
    for state in set(S) - RESTING:
        exits = {TRANSITIONS[state, event] for event in allowed_events(state)}
        assert exits & FAILURE_TARGETS, f"{state} has no way out when its step fails"


def test_the_crash_loop_guard_applies_to_every_step_in_progress() -> None:
    for state in set(S) - RESTING:
        assert Event.GAVE_UP in allowed_events(state), state


def test_resting_states_never_leave_on_their_own() -> None:
    for state in RESTING:
        assert allowed_events(state) == {Event.UPDATE_FOUND, Event.POLICY_DEFERRED}


def test_the_table_cannot_be_changed_at_runtime() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[S.IDLE, Event.HEALTH_PASSED] = S.COMMITTED  # type: ignore[index]


@given(st.lists(st.sampled_from(list(Event)), max_size=60), st.sampled_from(list(S)))
def test_events_applied_where_allowed_stay_inside_the_table(events: list[Event], start: S) -> None:
    state = start
    for event in events:
        if event in allowed_events(state):
            state = next_state(state, event)
            assert allowed_events(state), f"{state} is a dead end"
        else:
            with pytest.raises(InvalidTransitionError):
                next_state(state, event)
    assert state in S


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_after_any_history_a_failure_path_leads_to_rest(events: list[Event]) -> None:
    state = S.IDLE
    for event in events:
        state = TRANSITIONS.get((state, event), state)
    steps = 0
    while not is_resting(state):  # keep failing: the machine must come to rest
        failure = Event.BOOTED_OLD_SLOT if state is S.ROLLING_BACK else Event.GAVE_UP
        state = next_state(state, failure)
        steps += 1
        assert steps <= 3
