"""The device agent: one update at a time, every step journaled before it is acted on.

The decisions are the state table in `agent.machine`; this module is the thin runner that
owns the I/O around it (bootloader, TUF client, slot, server, broker). After any boot (a real
one, or the simulated device's reboot) `resume()` reconciles the journal with the
bootloader's view of the truth and carries the interrupted step on; every step is safe to
run again. Install order follows RAUC: verify metadata, mark the target slot unbootable,
write it in one pass, arm a trial boot, reboot, check health, commit or roll back.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agent.download import download_into
from agent.errors import AgentError, InstallError, VerificationError
from agent.fetcher import RangeFetcher
from agent.health import HealthCheck, run_health_checks
from agent.journal import Journal, JournalRecord
from agent.machine import Event, is_resting, next_state
from agent.outbox import Outbox
from agent.policy import UpdatePolicy, evaluate_policies
from agent.tuf_client import TargetInfo, TufClient, check_target
from hardware.bootcontrol import BootControl, BootControlError, Slot
from wire import (
    AvailabilityNotice,
    Command,
    CommandKind,
    FailureReason,
    PollAnswer,
    StatusReport,
    UpdateState,
)
from wire.rollout import in_rollout
from wire.versions import is_newer

log = logging.getLogger(__name__)

MAX_STEP_ATTEMPTS = 5  # a step that crashed this often is given up (Mender's loop guard)


class Reporter(Protocol):
    """Where reports go besides the outbox (the MQTT doorbell, best effort)."""

    def publish_status(self, payload: bytes) -> None: ...


class ServerLink(Protocol):
    """The server calls the runner needs (agent.server_api.ServerApi provides them)."""

    def send_reports(self, reports: Sequence[StatusReport]) -> set[int]: ...

    def poll(self) -> PollAnswer: ...


@dataclass
class AgentParts:
    """Everything the runner is given; tests and the demo build it with fakes or real parts."""

    device_id: str
    model: str
    boot: BootControl
    tuf: TufClient
    fetcher: RangeFetcher  # what download_into streams from
    server: ServerLink
    journal: Journal
    outbox: Outbox
    health_checks: list[HealthCheck] = field(default_factory=list)
    policies: list[UpdatePolicy] = field(default_factory=list)
    health_deadline_s: float = 60.0
    health_retry_s: float = 1.0
    initial_version: str = ""
    reporter: Reporter | None = None
    clock: Callable[[], float] = time.time


class Agent:
    def __init__(self, parts: AgentParts) -> None:
        self.p = parts
        self.record = JournalRecord()
        self._lock = threading.RLock()  # one update at a time, whoever woke us

    # ------------------------------------------------------------------ lifecycle

    def resume(self) -> None:
        """Call after every start: reconcile with the bootloader and finish what was begun."""
        with self._lock:
            loaded = self.p.journal.load()
            if loaded is None:
                self._start_fresh()
            else:
                self.record = loaded
                # The power may have gone between journaling a state and reporting it (a
                # COMMITTED never sent would leave the server believing the trial still runs):
                # say where we are after every start; the server keeps the highest seq.
                self._report()
            self._drive()
            self.flush_reports()

    def consider(self, notice: AvailabilityNotice, *, force: bool = False) -> None:
        """A release exists for our channel and model: install it if it is for us."""
        with self._lock:
            why_not = self._why_not(notice, force=force)
            if why_not is not None:
                log.debug(
                    "%s: not installing %s: %s", self.p.device_id, notice.target_path, why_not
                )
                return
            policy_reason = evaluate_policies(self.p.policies, datetime.now())
            if policy_reason is not None:
                self._defer(notice, policy_reason)
                return
            self._begin(notice)
            self._drive()
            self.flush_reports()

    def handle_command(self, command: Command) -> None:
        """Commands arrive between updates (one update at a time per device)."""
        if command.kind is not CommandKind.CHECK_NOW:  # check-now: the caller polls anyway
            log.info("%s: command %s not supported yet", self.p.device_id, command.kind)

    def poll_once(self) -> None:
        """Ask the server what to run (after every connect and on a jittered timer)."""
        answer = self.p.server.poll()
        force = any(c.kind is CommandKind.CHECK_NOW for c in answer.commands)
        for command in answer.commands:
            self.handle_command(command)
        if answer.notice is not None:
            self.consider(answer.notice, force=force)

    def flush_reports(self) -> None:
        """Send what the outbox holds, in order; keep anything not acknowledged."""
        pending = self.p.outbox.pending()
        if not pending:
            return
        try:
            acked = self.p.server.send_reports(pending)
        except AgentError as exc:
            log.info("%s: reports kept for later: %s", self.p.device_id, exc)
            return
        self.p.outbox.ack(acked)

    # ------------------------------------------------------------------ decisions

    def _why_not(self, notice: AvailabilityNotice, *, force: bool) -> str | None:
        rec = self.record
        if not is_resting(rec.state):
            return f"busy ({rec.state})"
        if notice.paused:
            return "rollout paused"
        if self.p.boot.status().trial:
            return "running a slot that is still on trial"
        if notice.model != self.p.model:
            return "notice is for another model"
        if not in_rollout(self.p.device_id, notice.rollout_id, notice.percentage):
            return "not in this wave"
        if not is_newer(notice.release_version, self.current_version):
            return "not newer than what runs"
        failed_here = rec.state is UpdateState.ROLLED_BACK or (
            rec.state is UpdateState.FAILED and bool(rec.detail.get("final"))
        )
        if failed_here and rec.target_path == notice.target_path and not force:
            return "this build already failed here"
        return None

    @property
    def current_version(self) -> str:
        active = self.p.boot.status().active.value
        return self.record.slot_versions.get(active, self.record.current_version)

    # ------------------------------------------------------------------ transitions

    def _start_fresh(self) -> None:
        if self.p.journal.recovered_from_corruption:
            log.warning(
                "%s: journal was corrupt; starting from the bootloader's view", self.p.device_id
            )
        self._abandon_unknown_trial()
        active = self.p.boot.status().active.value
        version = self.p.initial_version
        self.record = JournalRecord(
            state=UpdateState.IDLE,
            current_version=version,
            slot_versions={active: version} if version else {},
            updated_at=self.p.clock(),
        )
        self.p.journal.save(self.record)
        self._report()

    def _abandon_unknown_trial(self) -> None:
        """No journal says which update a trial belongs to, so nothing would ever commit it
        or roll it back (and updates wait while a trial runs): disarm a pending trial, and
        leave a running one for the committed slot. A slot nobody vouches for is not kept."""
        status = self.p.boot.status()
        if status.pending_trial is not None:
            self.p.boot.mark_unbootable(status.pending_trial)
        if status.trial:
            log.warning("%s: on an unknown trial slot; back to the committed one", self.p.device_id)
            self.p.boot.mark_unbootable(status.active)
            self.p.boot.reboot()

    def _transition(self, event: Event, **changes: Any) -> None:
        state = next_state(self.record.state, event)
        self.record = dataclasses.replace(
            self.record, state=state, step_attempts=0, updated_at=self.p.clock(), **changes
        )
        self.p.journal.save(self.record)
        self._report()

    def _report(self) -> None:
        rec = self.record
        status = self.p.boot.status()

        def build(seq: int) -> StatusReport:
            return StatusReport(
                device_id=self.p.device_id,
                seq=seq,
                state=rec.state,
                current_version=rec.slot_versions.get(status.active.value, rec.current_version),
                target_version=rec.target_version,
                slot=status.active.value,
                reason=rec.reason,
                detail=dict(rec.detail),
                at=self.p.clock(),
            )

        report = self.p.outbox.add(build)
        if self.p.reporter is not None:
            self.p.reporter.publish_status(report.to_json())

    def _defer(self, notice: AvailabilityNotice, reason: str) -> None:
        rec = self.record
        if rec.state is UpdateState.DEFERRED and rec.detail.get("why") == reason:
            return  # already said so
        self._transition(
            Event.POLICY_DEFERRED,
            target_path=notice.target_path,
            target_version=notice.release_version,
            rollout_id=notice.rollout_id,
            reason=FailureReason.POLICY,
            detail={"why": reason},
        )
        self.flush_reports()

    def _begin(self, notice: AvailabilityNotice) -> None:
        target = self.p.boot.status().active.other
        self._transition(
            Event.UPDATE_FOUND,
            current_version=self.current_version,
            target_path=notice.target_path,
            target_version=notice.release_version,
            rollout_id=notice.rollout_id,
            target_slot=target.value,
            bytes_written=0,
            reason=FailureReason.NONE,
            detail={},
        )

    # ------------------------------------------------------------------ steps

    def _drive(self) -> None:
        """Run steps until the update rests (or the process is rebooted away)."""
        steps: dict[UpdateState, Callable[[], None]] = {
            UpdateState.DOWNLOADING: self._step_download,
            UpdateState.INSTALLED: self._step_arm_trial,
            UpdateState.REBOOTING: self._step_after_reboot,
            UpdateState.TRIAL: self._step_trial,
            UpdateState.ROLLING_BACK: self._step_rollback,
        }
        while not is_resting(self.record.state):
            if self._crash_looping():
                continue
            steps[self.record.state]()
            self.flush_reports()

    def _crash_looping(self) -> bool:
        """Count step starts durably; give up a step that keeps dying (crash loop)."""
        rec = self.record
        if rec.step_attempts >= MAX_STEP_ATTEMPTS:
            detail = {**rec.detail, "gave_up_in": rec.state.value}
            self._transition(Event.GAVE_UP, reason=FailureReason.INTERNAL, detail=detail)
            return True
        self.record = dataclasses.replace(rec, step_attempts=rec.step_attempts + 1)
        self.p.journal.save(self.record)
        return False

    @property
    def _target_slot(self) -> Slot:
        return Slot(self.record.target_slot)

    def _step_download(self) -> None:
        slot = self._target_slot
        try:
            info = self._verified_target(slot)
            self.p.boot.mark_unbootable(slot)
            with self.p.boot.open_slot(slot) as sink:
                # with chunk hashes, whatever the slot already holds of this image is kept
                # (a resume after a power cut); the hashes decide, not the journal
                resume = info.length if info.chunk_sha256 else 0
                url = self.p.tuf.target_url(info)
                download_into(self.p.fetcher, url, info, sink, resume_from=resume)
        except (AgentError, BootControlError) as exc:
            self._fail_download(exc)
            return
        versions = {**self.record.slot_versions, slot.value: info.version}
        self._transition(
            Event.DOWNLOAD_DONE,
            slot_versions=versions,
            target_version=info.version,
            bytes_written=info.length,
        )

    def _verified_target(self, slot: Slot) -> TargetInfo:
        self.p.tuf.refresh()
        info = self.p.tuf.get_target(self.record.target_path)
        check_target(
            info,
            model=self.p.model,
            current_version=self.current_version,
            slot_size=self.p.boot.slot_size(slot),
        )
        return info

    def _fail_download(self, exc: Exception) -> None:
        reason = exc.reason if isinstance(exc, AgentError) else FailureReason.INTERNAL
        final = isinstance(exc, (VerificationError, InstallError))
        versions = {
            k: v for k, v in self.record.slot_versions.items() if k != self.record.target_slot
        }
        log.warning("%s: update failed: %s", self.p.device_id, exc)
        self._transition(
            Event.DOWNLOAD_FAILED,
            reason=reason,
            slot_versions=versions,
            detail={"error": str(exc)[:500], "final": final},
        )

    def _step_arm_trial(self) -> None:
        try:
            self.p.boot.set_trial(self._target_slot)
        except BootControlError as exc:
            self._transition(
                Event.INSTALL_FAILED, reason=FailureReason.INTERNAL, detail={"error": str(exc)}
            )
            return
        self._transition(Event.TRIAL_ARMED)
        self.p.boot.reboot()

    def _step_after_reboot(self) -> None:
        status = self.p.boot.status()
        slot = self._target_slot
        if status.active is slot and status.trial:
            self._transition(Event.BOOTED_NEW_SLOT, detail={"attempts_left": status.attempts_left})
        elif status.pending_trial is slot:
            self.p.boot.reboot()  # the power went before the reboot we asked for
        else:
            self._rolled_back(FailureReason.BOOT_FAILED, {"why": "bootloader kept the old slot"})

    def _step_trial(self) -> None:
        status = self.p.boot.status()
        slot = self._target_slot
        if status.active is not slot:
            self._rolled_back(FailureReason.BOOT_FAILED, {"why": "fell back during the trial"})
            return
        if not status.trial:  # marked good before the power went
            self._committed()
            return
        result = run_health_checks(
            self.p.health_checks, self.p.health_deadline_s, retry_interval_s=self.p.health_retry_s
        )
        if result.ok:
            self.p.boot.mark_good()
            self._committed()
            return
        detail = {
            "slot": slot.value,
            "failed_check": result.failed_check,
            "problem": result.problem,
            "log_excerpt": result.log_excerpt,
            "attempts_left": status.attempts_left,
        }
        self._transition(Event.HEALTH_FAILED, reason=FailureReason.HEALTH_CHECK, detail=detail)

    def _committed(self) -> None:
        self._transition(
            Event.HEALTH_PASSED,
            current_version=self.record.target_version,
            reason=FailureReason.NONE,
            detail={"slot": self.record.target_slot},
        )

    def _step_rollback(self) -> None:
        status = self.p.boot.status()
        slot = self._target_slot
        if status.active is not slot:
            if status.pending_trial is slot:  # armed but not booted: disarm it
                self.p.boot.mark_unbootable(slot)
            self._rolled_back(self.record.reason, dict(self.record.detail))
            return
        try:
            self.p.boot.mark_unbootable(slot)  # RAUC's mark-bad on the booted slot
        except BootControlError as exc:
            log.info(
                "%s: cannot mark the trial slot bad (%s); the boot counter will",
                self.p.device_id,
                exc,
            )
        self.p.boot.reboot()

    def _rolled_back(self, reason: FailureReason, detail: dict[str, Any]) -> None:
        slot = self.record.target_slot
        versions = {k: v for k, v in self.record.slot_versions.items() if k != slot}
        status = self.p.boot.status()
        self._transition(
            Event.BOOTED_OLD_SLOT,
            reason=reason,
            slot_versions=versions,
            detail={**detail, "slot": slot, "running_slot": status.active.value},
        )


def jittered(interval: float, jitter: float, rng: random.Random | None = None) -> float:
    """The next poll delay: interval +/- jitter share, so a fleet does not poll in step."""
    r = rng or random
    return max(0.1, interval * (1 + r.uniform(-jitter, jitter)))
