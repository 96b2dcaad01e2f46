"""The agent is one table: `(state, event) -> next state`, after Mender's client.

States are `wire.UpdateState` (they go into reports); events are what a step of the
runner observed. The runner journals the next state before acting on it, so this table is the
whole of what an update may do. A pair not in the table is a bug in the caller and raises.

Resting states are where an update may start and where the agent waits; every other state
is a step in progress that the runner resumes after a reboot or crash, and every one of them
has an edge out to FAILED, ROLLING_BACK or ROLLED_BACK, so no update can be stuck in it.
See docs/decisions/0007-agent-state-machine.md for the rows that are not obvious.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from wire import UpdateState

S = UpdateState


class Event(enum.StrEnum):
    """What a step observed; the only inputs to the table."""

    UPDATE_FOUND = "update_found"  # a release for us, policies allow it
    POLICY_DEFERRED = "policy_deferred"  # a device policy said "not now"
    DOWNLOAD_DONE = "download_done"  # slot written, length and hashes matched
    DOWNLOAD_FAILED = "download_failed"
    INSTALL_FAILED = "install_failed"  # could not arm the trial boot
    TRIAL_ARMED = "trial_armed"  # bootloader will try the new slot on the next boot
    BOOTED_NEW_SLOT = "booted_new_slot"
    BOOTED_OLD_SLOT = "booted_old_slot"
    HEALTH_PASSED = "health_passed"
    HEALTH_FAILED = "health_failed"
    CANCELLED = "cancelled"  # the server or the owner abandoned this update
    GAVE_UP = "gave_up"  # crash-loop guard: the step kept dying


RESTING: Final[frozenset[UpdateState]] = frozenset(
    {S.IDLE, S.COMMITTED, S.ROLLED_BACK, S.FAILED, S.DEFERRED}
)

# Where a state goes when its step fails, so that nothing is ever stuck mid-update.
FAILURE_TARGETS: Final[frozenset[UpdateState]] = frozenset(
    {S.FAILED, S.ROLLING_BACK, S.ROLLED_BACK}
)


def _rows() -> dict[tuple[UpdateState, Event], UpdateState]:
    rows: dict[tuple[UpdateState, Event], UpdateState] = {}
    for resting in RESTING:
        rows[resting, Event.UPDATE_FOUND] = S.DOWNLOADING
        rows[resting, Event.POLICY_DEFERRED] = S.DEFERRED
    rows |= {
        # Before the new slot is bootable: any failure abandons the update.
        (S.DOWNLOADING, Event.DOWNLOAD_DONE): S.INSTALLED,
        (S.DOWNLOADING, Event.DOWNLOAD_FAILED): S.FAILED,
        (S.DOWNLOADING, Event.CANCELLED): S.FAILED,
        (S.DOWNLOADING, Event.GAVE_UP): S.FAILED,
        (S.INSTALLED, Event.TRIAL_ARMED): S.REBOOTING,
        (S.INSTALLED, Event.INSTALL_FAILED): S.FAILED,
        (S.INSTALLED, Event.CANCELLED): S.FAILED,
        (S.INSTALLED, Event.GAVE_UP): S.FAILED,
        # The trial boot is armed: from here on, abandoning means rolling back.
        (S.REBOOTING, Event.BOOTED_NEW_SLOT): S.TRIAL,
        (S.REBOOTING, Event.BOOTED_OLD_SLOT): S.ROLLED_BACK,
        (S.REBOOTING, Event.GAVE_UP): S.ROLLING_BACK,
        (S.REBOOTING, Event.CANCELLED): S.ROLLING_BACK,  # added: see the decision record
        (S.TRIAL, Event.HEALTH_PASSED): S.COMMITTED,
        (S.TRIAL, Event.HEALTH_FAILED): S.ROLLING_BACK,
        (S.TRIAL, Event.GAVE_UP): S.ROLLING_BACK,
        (S.TRIAL, Event.CANCELLED): S.ROLLING_BACK,  # added: see the decision record
        (S.TRIAL, Event.BOOTED_OLD_SLOT): S.ROLLED_BACK,  # power cut, bootloader fell back
        (S.ROLLING_BACK, Event.BOOTED_OLD_SLOT): S.ROLLED_BACK,
        (S.ROLLING_BACK, Event.GAVE_UP): S.FAILED,  # added: see the decision record
    }
    return rows


TRANSITIONS: Final[Mapping[tuple[UpdateState, Event], UpdateState]] = MappingProxyType(_rows())


class InvalidTransitionError(Exception):
    """The caller asked for a `(state, event)` pair the table does not have: a bug."""

    def __init__(self, state: UpdateState, event: Event) -> None:
        super().__init__(f"no transition from {state.value!r} on {event.value!r}")
        self.state = state
        self.event = event


def next_state(state: UpdateState, event: Event) -> UpdateState:
    """The state after `event` in `state`; raises InvalidTransitionError if not allowed."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise InvalidTransitionError(state, event) from None


def is_resting(state: UpdateState) -> bool:
    """True where no update is in progress (one may start from here)."""
    return state in RESTING


def allowed_events(state: UpdateState) -> frozenset[Event]:
    """The events the table accepts in `state`."""
    return frozenset(event for (source, event) in TRANSITIONS if source is state)
