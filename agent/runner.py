"""The device agent: one update at a time, every step journaled before it is acted on.

The decisions are the state table in `agent.machine`; this module is the thin runner that
owns the I/O around it (bootloader, TUF client, slot, server, broker). After any boot (a real
one, or the simulated device's reboot) `resume()` reconciles the journal with the
bootloader's view of the truth and carries the interrupted step on; every step is safe to
run again. Install order follows RAUC: verify metadata, mark the target slot unbootable,
write it in one pass, arm a trial boot, reboot, check health, commit or roll back.

What the runner observes is interpreted by the pure functions of `agent.decide`. Commands
(`handle_command`): a cancel or a roll-back command abandons the update in progress as the
table says; it is noted at once from any thread (`note_command`) and the running step stops
at its next check: between the pieces of a download, before the trial is armed, before the
trial slot is committed, and between steps.
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
from pathlib import Path
from typing import Any, Final, Protocol

from agent import decide
from agent.decide import DeviceFacts
from agent.delta import delta_installer
from agent.download import download_into
from agent.errors import (
    AgentError,
    InstallError,
    TransportError,
    UpdateCancelledError,
    VerificationError,
)
from agent.fetcher import RangeFetcher
from agent.health import HealthCheck, run_health_checks
from agent.installed import InstalledRelease
from agent.journal import Journal, JournalRecord
from agent.machine import Event, is_resting, next_state
from agent.outbox import Outbox
from agent.payload import install_payload
from agent.policy import UpdatePolicy, evaluate_policies
from agent.progress import DownloadProgress
from agent.tuf_client import TargetInfo, TufClient, check_target
from hardware.bootcontrol import BootControl, BootControlError, PayloadApplier, Slot, SlotSink
from wire import (
    AvailabilityNotice,
    Command,
    CommandKind,
    FailureReason,
    PollAnswer,
    StatusReport,
    UpdateState,
)

log = logging.getLogger(__name__)

MAX_STEP_ATTEMPTS = 5  # a step that crashed this often is given up (Mender's loop guard)
ABANDONING: Final = frozenset({CommandKind.CANCEL, CommandKind.ROLLBACK})


class Reporter(Protocol):
    """Where reports go besides the outbox (the MQTT doorbell, best effort)."""

    def publish_status(self, payload: bytes) -> None: ...


class ServerLink(Protocol):
    """The server calls the runner needs (agent.server_api.ServerApi provides them)."""

    def send_reports(self, reports: Sequence[StatusReport]) -> set[int]: ...

    def poll(self) -> PollAnswer: ...

    def ack_commands(self, command_ids: Sequence[str]) -> None: ...


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
    channel: Callable[[], str]  # the channel followed now (a beta tester may join preview)
    health_checks: list[HealthCheck] = field(default_factory=list)
    policies: list[UpdatePolicy] = field(default_factory=list)
    health_deadline_s: float = 60.0
    health_retry_s: float = 1.0
    initial_version: str = ""
    reporter: Reporter | None = None
    clock: Callable[[], float] = time.time  # wall clock, seconds since the epoch
    command_poll_s: float = 60.0  # during a download, ask the server for commands this often
    delta_dir: Path | None = None  # where a delta's patch is kept; None: full images only


class AbandonRequest:
    """A cancel or roll-back command waiting for the update it stops. Set from any thread
    (the MQTT thread, a poll between download pieces); taken by the thread that drives."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._command: Command | None = None

    def set(self, command: Command) -> None:
        with self._guard:
            self._command = command

    def is_set(self) -> bool:
        return self._command is not None

    def take(self) -> Command | None:
        with self._guard:
            command, self._command = self._command, None
        return command


class Agent:
    def __init__(self, parts: AgentParts) -> None:
        self.parts = parts
        self.record = JournalRecord()
        self._lock = threading.RLock()  # one update at a time, whoever woke us
        self._abandon = AbandonRequest()
        self._driving = False  # a step runs on the thread that holds the lock
        self._last_command_poll = 0.0
        self._taken_commands: list[str] = []  # handled or noted, not yet acknowledged
        self._deltas = delta_installer(parts)

    @property
    def p(self) -> AgentParts:
        """Old name of `parts`, kept only for tests/powerlab.py until it moves to lab/."""
        return self.parts

    # ------------------------------------------------------------------ lifecycle

    def resume(self) -> None:
        """Call after every start: reconcile with the bootloader and finish what was begun."""
        with self._lock:
            loaded = self.parts.journal.load()
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
            self._honour_abandon_request()  # one noted at rest has nothing to abandon
            why_not = decide.why_not(notice, self.record, self._facts(), force=force)
            if why_not is not None:
                log.debug(
                    "%s: not installing %s: %s", self.parts.device_id, notice.target_path, why_not
                )
                return
            policy_reason = evaluate_policies(self.parts.policies, self._now())
            if policy_reason is not None:
                self._defer(notice, policy_reason)
                return
            self._begin(notice)
            self._drive()
            self.flush_reports()

    def handle_command(self, command: Command) -> None:
        """A command from the server (a poll, or MQTT). Cancel and roll-back abandon the
        update in progress as the table says: before the trial is armed it FAILED (target
        slot unbootable, running slot untouched), after it rolls back; at rest they change
        nothing. Check-now needs nothing here: `poll_once` forces the notice that came with
        it. Never waits for an update running on another thread: that update stops at its
        next check."""
        log.info("%s: command %s (%s)", self.parts.device_id, command.kind, command.command_id)
        self.note_command(command)
        self._taken_commands.append(command.command_id)
        if not self._lock.acquire(blocking=False):
            return  # an update runs on another thread; it sees the request at its next check
        try:
            if not self._driving:  # (called from inside a step: the step sees the request)
                self._drive()
                self.flush_reports()
        finally:
            self._lock.release()

    def note_command(self, command: Command) -> None:
        """Thread-safe and immediate: a cancel or roll-back stops the running step at its
        next check (the MQTT thread calls this as soon as the command is heard)."""
        if command.kind in ABANDONING:
            self._abandon.set(command)

    def poll_once(self) -> None:
        """Ask the server what to run (after every connect and on a jittered timer)."""
        answer = self.parts.server.poll()
        force = any(c.kind is CommandKind.CHECK_NOW for c in answer.commands)
        for command in answer.commands:
            self.handle_command(command)
        if answer.notice is not None:
            self.consider(answer.notice, force=force)
        self.ack_taken_commands()

    def ack_taken_commands(self) -> None:
        """Tell the server which commands were handled (or noted by the running update), so
        its polls stop repeating them; on failure they come again and are handled again,
        which every command allows."""
        taken, self._taken_commands = self._taken_commands, []
        if not taken:
            return
        try:
            self.parts.server.ack_commands(list(dict.fromkeys(taken)))
        except AgentError as exc:
            log.info("%s: commands not acknowledged yet: %s", self.parts.device_id, exc)
            self._taken_commands = taken + self._taken_commands

    def flush_reports(self) -> None:
        """Send what the outbox holds, in order; keep anything not acknowledged. Reports the
        server refuses outright (a conflicting or far-ahead seq) are set aside, one by one,
        so that one of them cannot hold back all the others forever."""
        pending = self.parts.outbox.pending()
        if not pending:
            return
        try:
            acked = self.parts.server.send_reports(pending)
        except TransportError as exc:
            if exc.retryable:
                log.info("%s: reports kept for later: %s", self.parts.device_id, exc)
                return
            acked = self._send_one_by_one(pending)
        except AgentError as exc:
            log.info("%s: reports kept for later: %d (%s)", self.parts.device_id, len(pending), exc)
            return
        self.parts.outbox.ack(acked)
        log_delivery(self.parts.device_id, [r.seq for r in pending], acked)

    def _send_one_by_one(self, pending: Sequence[StatusReport]) -> set[int]:
        acked: set[int] = set()
        for report in pending:
            try:
                acked |= self.parts.server.send_reports([report])
            except TransportError as exc:
                if exc.retryable:
                    break
                self.parts.outbox.set_aside(report.seq, str(exc))
            except AgentError:
                break
        return acked

    # ------------------------------------------------------------------ what is

    def _facts(self) -> DeviceFacts:
        status = self.parts.boot.status()
        return DeviceFacts(
            device_id=self.parts.device_id,
            model=self.parts.model,
            running_version=decide.running_version(self.record, status),
            on_trial=status.trial,
        )

    @property
    def current_version(self) -> str:
        return decide.running_version(self.record, self.parts.boot.status())

    def _now(self) -> datetime:
        """The injected wall clock as a local datetime (what update policies speak)."""
        return datetime.fromtimestamp(self.parts.clock())

    # ------------------------------------------------------------------ transitions

    def _start_fresh(self) -> None:
        if self.parts.journal.recovered_from_corruption:
            log.warning(
                "%s: journal was corrupt; starting from the bootloader's view", self.parts.device_id
            )
        self._abandon_unknown_trial()
        active = self.parts.boot.status().active.value
        version = self.parts.initial_version
        self.record = JournalRecord(
            state=UpdateState.IDLE,
            current_version=version,
            slot_versions={active: version} if version else {},
            updated_at=self.parts.clock(),
        )
        self.parts.journal.save(self.record)
        self._report()

    def _abandon_unknown_trial(self) -> None:
        """No journal says which update a trial belongs to, so nothing would ever commit it
        or roll it back (and updates wait while a trial runs): disarm a pending trial, and
        leave a running one for the committed slot. A slot nobody vouches for is not kept."""
        status = self.parts.boot.status()
        if status.pending_trial is not None:
            self.parts.boot.mark_unbootable(status.pending_trial)
        if status.trial:
            log.warning(
                "%s: on an unknown trial slot; back to the committed one", self.parts.device_id
            )
            self.parts.boot.mark_unbootable(status.active)
            self.parts.boot.reboot()

    def _transition(self, event: Event, **changes: Any) -> None:
        state = next_state(self.record.state, event)
        self.record = dataclasses.replace(
            self.record, state=state, step_attempts=0, updated_at=self.parts.clock(), **changes
        )
        self.parts.journal.save(self.record)
        self._report()

    def _report(self) -> None:
        rec = self.record
        status = self.parts.boot.status()

        def build(seq: int) -> StatusReport:
            return StatusReport(
                device_id=self.parts.device_id,
                seq=seq,
                state=rec.state,
                current_version=decide.running_version(rec, status),
                target_version=rec.target_version,
                slot=status.active.value,
                reason=rec.reason,
                detail=dict(rec.detail),
                at=self.parts.clock(),
            )

        report = self.parts.outbox.add(build)
        if self.parts.reporter is not None:
            self.parts.reporter.publish_status(report.to_json())

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
        target = self.parts.boot.status().active.other
        log.info(
            "%s: update found: %s (%s), installing into slot %s",
            *(self.parts.device_id, notice.release_version, notice.target_path, target.value),
        )
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
        self._driving = True
        try:
            while True:
                self._honour_abandon_request()
                if is_resting(self.record.state):
                    return
                if self._crash_looping():
                    continue
                steps[self.record.state]()
                self.flush_reports()
        finally:
            self._driving = False

    # ------------------------------------------------------------------ cancel

    def _honour_abandon_request(self) -> None:
        command = self._abandon.take()
        if command is None:
            return
        state = self.record.state
        if decide.abandon_event(state) is None:
            log.info(
                "%s: %s in %s: no update to abandon, nothing done",
                *(self.parts.device_id, command.kind, state),
            )
            return
        log.info("%s: %s abandons the update in %s", self.parts.device_id, command.kind, state)
        detail = {
            "command": command.kind.value,
            "command_id": command.command_id,
            "abandoned_in": state.value,
        }
        if decide.slot_still_unbootable(state):
            self._disown_target_slot()
            changes: dict[str, Any] = self.record.without_slot(self.record.target_slot)
        else:
            changes = {}  # ROLLING_BACK next: its step disarms or leaves the trial slot
        self._transition(Event.CANCELLED, reason=FailureReason.CANCELLED, detail=detail, **changes)

    def _disown_target_slot(self) -> None:
        """Make sure the bootloader never boots the half-written (or never armed) slot."""
        try:
            self.parts.boot.mark_unbootable(self._target_slot)
        except BootControlError as exc:
            log.warning(
                "%s: cannot mark slot %s unbootable: %s",
                *(self.parts.device_id, self.record.target_slot, exc),
            )

    def _keep_downloading(self) -> bool:
        """Asked between the pieces of a download: False once a cancel was noted. Asks the
        server for commands every `command_poll_s` (a device without MQTT hears a cancel
        during a long download too)."""
        if self.parts.clock() - self._last_command_poll >= self.parts.command_poll_s:
            self._poll_commands()
        return not self._abandon.is_set()

    def _poll_commands(self) -> None:
        self._last_command_poll = self.parts.clock()
        try:
            answer = self.parts.server.poll()
        except AgentError as exc:
            log.info("%s: no commands during the download: %s", self.parts.device_id, exc)
            return
        for command in answer.commands:  # the notice waits: one update at a time
            log.info(
                "%s: command %s (%s) during the download",
                *(self.parts.device_id, command.kind, command.command_id),
            )
            self.note_command(command)
            self._taken_commands.append(command.command_id)

    def _crash_looping(self) -> bool:
        """Count step starts durably; give up a step that keeps dying (crash loop)."""
        rec = self.record
        if rec.step_attempts >= MAX_STEP_ATTEMPTS:
            detail = {**rec.detail, "gave_up_in": rec.state.value}
            self._transition(Event.GAVE_UP, reason=FailureReason.INTERNAL, detail=detail)
            return True
        self.record = dataclasses.replace(rec, step_attempts=rec.step_attempts + 1)
        self.parts.journal.save(self.record)
        return False

    @property
    def _target_slot(self) -> Slot:
        return Slot(self.record.target_slot)

    def _step_download(self) -> None:
        slot = self._target_slot
        self._last_command_poll = self.parts.clock()
        try:
            info = self._verified_target(slot)
            self.parts.boot.mark_unbootable(slot)
            if isinstance(self.parts.boot, PayloadApplier):  # update_engine writes the slot
                install_payload(
                    self.parts.boot,
                    self.parts.fetcher,
                    self.parts.tuf.target_url(info),
                    info,
                    device_id=self.parts.device_id,
                    keep_going=self._keep_downloading,
                )
            else:
                self._write_slot(info, slot)
        except UpdateCancelledError as exc:
            log.info("%s: %s", self.parts.device_id, exc)
            return  # the drive loop honours the request that stopped it
        except (AgentError, BootControlError) as exc:
            self._fail_download(exc)
            return
        log.info(
            "%s: verified %s: %d bytes in slot %s match the signed hashes",
            *(self.parts.device_id, info.path, info.length, slot.value),
        )
        signed = InstalledRelease.of(info.rom) if info.rom else None
        self._transition(
            Event.DOWNLOAD_DONE,
            **self.record.with_slot(slot.value, info.version, signed),
            target_version=info.version,
            bytes_written=info.length,
        )

    def _write_slot(self, info: TargetInfo, slot: Slot) -> None:
        """The verified image into the slot, from a delta or in full."""
        with self.parts.boot.open_slot(slot) as sink:
            if not self._installed_from_delta(info, sink):
                # with chunk hashes, whatever the slot already holds of this image is
                # kept (a resume after a power cut); the hashes decide, not the journal
                resume = info.length if info.chunk_sha256 else 0
                url = self.parts.tuf.target_url(info)
                download_into(
                    self.parts.fetcher,
                    url,
                    info,
                    sink,
                    resume_from=resume,
                    keep_going=self._keep_downloading,
                    progress=DownloadProgress(self.parts.device_id, info.path, info.length),
                )

    def _installed_from_delta(self, info: TargetInfo, sink: SlotSink) -> bool:
        """True when a delta wrote the verified image into the slot. Any failure is
        journaled and reported (`delta_fallback` in the detail) and the full image follows;
        the journal names the delta before the slot is written (`delta`)."""
        if self._deltas is None or not decide.try_delta(self.record):
            return False
        try:
            delta = self._deltas.find(info, self.current_version)
            if delta is None:
                return False
            self._note_detail(delta=delta.info.path, delta_bytes=delta.info.length)
            self._deltas.install(delta, info, sink, self._keep_downloading)
        except UpdateCancelledError:
            raise
        except (AgentError, BootControlError) as exc:
            log.warning("%s: delta failed, fetching the full image: %s", self.parts.device_id, exc)
            self._note_detail(delta_fallback=f"{exc.__class__.__name__}: {exc}"[:500])
            self._report()
            return False
        return True

    def _note_detail(self, **detail: Any) -> None:
        """Journal more detail about the step in progress (no transition)."""
        self.record = self.record.replace(detail={**self.record.detail, **detail})
        self.parts.journal.save(self.record)

    def _verified_target(self, slot: Slot) -> TargetInfo:
        self.parts.tuf.refresh()
        info = self.parts.tuf.get_target(self.record.target_path)
        check_target(
            info,
            model=self.parts.model,
            channel=self.parts.channel(),
            current_version=self.current_version,
            slot_size=self.parts.boot.slot_size(slot),
            installed=self.record.slot_releases.get(slot.other.value),  # the running build's
        )
        return info

    def _fail_download(self, exc: Exception) -> None:
        reason = exc.reason if isinstance(exc, AgentError) else FailureReason.INTERNAL
        final = isinstance(exc, (VerificationError, InstallError))
        log.warning("%s: update failed: %s", self.parts.device_id, exc)
        self._transition(
            Event.DOWNLOAD_FAILED,
            reason=reason,
            **self.record.without_slot(self.record.target_slot),
            detail={"error": str(exc)[:500], "final": final},
        )

    def _step_arm_trial(self) -> None:
        if self._abandon.is_set():
            return  # cancelled before the slot became bootable: the drive loop abandons it
        try:
            self.parts.boot.set_trial(self._target_slot)
        except BootControlError as exc:
            self._transition(
                Event.INSTALL_FAILED, reason=FailureReason.INTERNAL, detail={"error": str(exc)}
            )
            return
        self._transition(Event.TRIAL_ARMED)
        log.info(
            "%s: trial armed: slot %s boots %s on trial; rebooting",
            *(self.parts.device_id, self.record.target_slot, self.record.target_version),
        )
        self.parts.boot.reboot()

    def _step_after_reboot(self) -> None:
        status = self.parts.boot.status()
        event = decide.observe(self.record, status)
        if event is Event.BOOTED_NEW_SLOT:
            self._transition(event, detail={"attempts_left": status.attempts_left})
        elif event is None:
            self.parts.boot.reboot()  # the power went before the reboot we asked for
        else:
            self._rolled_back(FailureReason.BOOT_FAILED, {"why": "bootloader kept the old slot"})

    def _step_trial(self) -> None:
        status = self.parts.boot.status()
        slot = self._target_slot
        event = decide.observe(self.record, status)
        if event is Event.BOOTED_OLD_SLOT:
            self._rolled_back(FailureReason.BOOT_FAILED, {"why": "fell back during the trial"})
            return
        if event is Event.HEALTH_PASSED:  # marked good before the power went
            self._committed()
            return
        result = run_health_checks(
            self.parts.health_checks,
            self.parts.health_deadline_s,
            retry_interval_s=self.parts.health_retry_s,
        )
        if result.ok:
            log.info("%s: health checks passed on slot %s", self.parts.device_id, slot.value)
        else:
            log.warning("%s: %s", self.parts.device_id, result.explanation())
        if self._abandon.is_set():
            return  # cancelled during the trial: never commit; the drive loop rolls back
        if result.ok:
            self.parts.boot.mark_good()
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
        """Journaled, then logged: a "committed" line in the log is a commit that holds (the
        agent may be stopped or lose power at any instant, this one included)."""
        self._transition(
            Event.HEALTH_PASSED,
            current_version=self.record.target_version,
            reason=FailureReason.NONE,
            detail={"slot": self.record.target_slot},
        )
        log.info(
            "%s: committed %s on slot %s",
            *(self.parts.device_id, self.record.target_version, self.record.target_slot),
        )

    def _step_rollback(self) -> None:
        status = self.parts.boot.status()
        slot = self._target_slot
        if decide.observe(self.record, status) is Event.BOOTED_OLD_SLOT:
            if status.pending_trial is slot:  # armed but not booted: disarm it
                self.parts.boot.mark_unbootable(slot)
            self._rolled_back(self.record.reason, dict(self.record.detail))
            return
        try:
            self.parts.boot.mark_unbootable(slot)  # RAUC's mark-bad on the booted slot
        except BootControlError as exc:
            log.info(
                "%s: cannot mark the trial slot bad (%s); the boot counter will",
                self.parts.device_id,
                exc,
            )
        log.info("%s: rebooting into the committed slot", self.parts.device_id)
        self.parts.boot.reboot()

    def _rolled_back(self, reason: FailureReason, detail: dict[str, Any]) -> None:
        """Journaled, then logged, as `_committed`."""
        slot = self.record.target_slot
        version = self.record.target_version
        status = self.parts.boot.status()
        self._transition(
            Event.BOOTED_OLD_SLOT,
            reason=reason,
            **self.record.without_slot(slot),
            detail={**detail, "slot": slot, "running_slot": status.active.value},
        )
        log.info(
            "%s: rolled back %s: slot %s runs again (%s: %s)",
            *(self.parts.device_id, version, status.active.value, reason.value),
            detail.get("why") or detail.get("problem") or detail.get("command") or "",
        )


def log_delivery(device_id: str, sent: list[int], acked: set[int]) -> None:
    """One line: which reports the server now holds, and which stay in the outbox."""
    kept = [seq for seq in sent if seq not in acked]
    unacked = f"; kept, not acknowledged: {len(kept)}" if kept else ""
    log.info("%s: reports delivered: %d%s", device_id, len(sent) - len(kept), unacked)


def jittered(interval: float, jitter: float, rng: random.Random | None = None) -> float:
    """The next poll delay: interval +/- jitter share, so a fleet does not poll in step."""
    r = rng or random
    return max(0.1, interval * (1 + r.uniform(-jitter, jitter)))
