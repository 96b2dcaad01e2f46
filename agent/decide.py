"""The runner's decisions, as pure functions over plain data.

`agent.runner` owns the I/O (bootloader, journal, network) and asks these what it means:
which version runs, whether a notice is for this device (`why_not`), what the bootloader's
view says happened to the update across a boot (`observe`), and what a cancel does where
the update stands (`abandon_event`). Every event they return is one the state table
(`agent.machine`) accepts from the record's state; the hypothesis tests check that against
the simulated bootloader's rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.journal import JournalRecord
from agent.machine import Event, allowed_events, is_resting
from hardware.bootcontrol import BootStatus, Slot
from wire import AvailabilityNotice, FailureReason, UpdateState
from wire.rollout import in_rollout
from wire.versions import is_newer

S = UpdateState


@dataclass(frozen=True)
class DeviceFacts:
    """What eligibility needs to know of the device at the moment a notice arrives."""

    device_id: str
    model: str
    running_version: str
    on_trial: bool  # the bootloader runs a slot that is not committed yet


def running_version(record: JournalRecord, status: BootStatus) -> str:
    """The version in the slot that runs (what the journal knows of it)."""
    return record.slot_versions.get(status.active.value, record.current_version)


def why_not(
    notice: AvailabilityNotice, record: JournalRecord, device: DeviceFacts, *, force: bool = False
) -> str | None:
    """Why the update `notice` offers is not for this device now; None when it is.

    `force` (a check-now command) retries a build that failed or was cancelled here.
    """
    if not is_resting(record.state):
        return f"busy ({record.state})"
    if notice.paused:
        return "rollout paused"
    if device.on_trial:
        return "running a slot that is still on trial"
    if notice.model != device.model:
        return "notice is for another model"
    if not in_rollout(device.device_id, notice.rollout_id, notice.percentage):
        return "not in this wave"
    if not is_newer(notice.release_version, device.running_version):
        return "not newer than what runs"
    if force:
        return None
    return _refused_here(notice, record)


def _refused_here(notice: AvailabilityNotice, record: JournalRecord) -> str | None:
    """A build is not tried again where it failed; an update is not started again where it
    was cancelled, until a new notice (another build or another rollout) comes."""
    same_build = record.target_path == notice.target_path
    if record.reason is FailureReason.CANCELLED:
        if same_build and record.rollout_id == notice.rollout_id:
            return "this update was cancelled here"
        return None
    failed_here = record.state is S.ROLLED_BACK or (
        record.state is S.FAILED and bool(record.detail.get("final"))
    )
    if failed_here and same_build:
        return "this build already failed here"
    return None


def observe(record: JournalRecord, status: BootStatus) -> Event | None:
    """What the bootloader's view says happened to the update across the last boot.

    BOOTED_NEW_SLOT: the armed slot runs on trial. BOOTED_OLD_SLOT: the bootloader fell back
    (or kept the old slot). HEALTH_PASSED: the trial slot was marked good before the power
    went. None: nothing the table needs to hear; the step carries on (download, arm the
    trial, reboot again because the power went before the reboot, check health).
    """
    if record.state not in (S.REBOOTING, S.TRIAL, S.ROLLING_BACK) or not record.target_slot:
        return None
    target = Slot(record.target_slot)
    if record.state is S.REBOOTING:
        return _after_reboot(target, status)
    if status.active is not target:
        return Event.BOOTED_OLD_SLOT
    if record.state is S.TRIAL and not status.trial:
        return Event.HEALTH_PASSED
    return None


def _after_reboot(target: Slot, status: BootStatus) -> Event | None:
    if status.active is target and status.trial:
        return Event.BOOTED_NEW_SLOT
    if status.pending_trial is target:
        return None  # armed, not booted yet: the power went before the reboot
    return Event.BOOTED_OLD_SLOT


DELTA_ATTEMPTS = 2  # starts of the download step that may try a delta (a power cut restarts it)


def try_delta(record: JournalRecord) -> bool:
    """Whether the download step should try a delta first: not after one failed for this
    update, nor once the step was started more than `DELTA_ATTEMPTS` times (an apply that
    keeps dying gives way to the full image before the crash-loop guard gives up)."""
    return "delta_fallback" not in record.detail and record.step_attempts <= DELTA_ATTEMPTS


def abandon_event(state: UpdateState) -> Event | None:
    """What a cancel (or a roll-back command) does in `state`: CANCELLED where the table
    takes it; None at rest and while already rolling back (nothing left to abandon)."""
    return Event.CANCELLED if Event.CANCELLED in allowed_events(state) else None


def slot_still_unbootable(state: UpdateState) -> bool:
    """True before the trial boot is armed: abandoning then leaves the target slot
    unbootable and the running slot as it was (FAILED); after, it is a rollback."""
    return state in (S.DOWNLOADING, S.INSTALLED)
