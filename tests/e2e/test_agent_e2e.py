"""The real agent against the real server over loopback HTTP, a signed repository, a
simulated device, and (for the doorbell) a real mosquitto."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, Timestamp

from agent.daemon import AgentDaemon, build_agent
from agent.health import CallableCheck
from agent.policy import MaintenanceWindow
from agent.runner import Agent
from agent.server_api import ServerApi
from agent.testing import MidDownload
from hardware.bootcontrol import Slot
from hardware.sim import SimDevice
from lab.fleet import MIB, Backend, Board, daemons_running, running_backend
from server.api_models import QueuedCommand, Report
from server.schemas import CommandIn
from signing.keys import key_paths, load_signer
from signing.repo import PublishedRelease, target_storage_name
from wire import AvailabilityNotice, Command, CommandKind, FailureReason, UpdateState

MODEL = "board"
BOARD = Board(model=MODEL, slot_size=8 * MIB, image_size=3 * MIB + 7 * 32, chunk_size=MIB)
HEALTH_DEADLINE_S = 5.0
CANCEL = CommandIn(kind=CommandKind.CANCEL)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Backend]:
    with running_backend(tmp_path, BOARD) as backend:
        yield backend


def make_agent(env: Backend, device_id: str = "dev-1") -> tuple[Agent, SimDevice]:
    return env.start_agent(device_id, health_deadline_s=HEALTH_DEADLINE_S)


def slot_digest(sim: SimDevice, slot: Slot) -> str:
    return hashlib.sha256(sim.slot_path(slot).read_bytes()).hexdigest()


def notice_for(release: PublishedRelease, **changes: Any) -> AvailabilityNotice:
    fields: dict[str, Any] = {
        "release_version": release.version,
        "target_path": release.target_path,
        "channel": release.channel,
        "model": MODEL,
        "rollout_id": "r1",
        "percentage": 100.0,
    }
    return AvailabilityNotice(**{**fields, **changes})


def test_update_is_installed_committed_and_every_step_reported(env: Backend) -> None:
    agent, sim = make_agent(env)
    release = env.publish("1.0")
    agent.poll_once()
    assert agent.record.state is UpdateState.COMMITTED
    status = sim.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.B, False)
    with sim.slot_path(Slot.B).open("rb") as f:
        assert hashlib.sha256(f.read(release.length)).hexdigest() == release.sha256
    row = env.device_row("dev-1")
    assert (row.current_version, row.state, row.slot) == ("1.0", "committed", "b")
    assert env.reported_states("dev-1") == [
        "idle",
        "downloading",
        "installed",
        "rebooting",
        "trial",
        "committed",
    ]
    assert len(agent.parts.outbox) == 0


def test_failed_health_check_rolls_back_and_says_why(env: Backend) -> None:
    agent, sim = make_agent(env)
    env.publish("1.0")
    agent.poll_once()
    sim.health_failing = True
    env.publish("2.0")
    agent.poll_once()
    assert agent.record.state is UpdateState.ROLLED_BACK
    assert sim.status().active is Slot.B
    assert sim.status().committed is Slot.B
    assert agent.current_version == "1.0"
    rolled = last_report(env, "dev-1")
    assert rolled.state == "rolled_back"
    assert rolled.reason == FailureReason.HEALTH_CHECK.value
    assert rolled.detail["failed_check"] == "device"
    assert env.reported_states("dev-1")[-2:] == ["rolling_back", "rolled_back"]
    # the same build is not retried after it failed here
    agent.poll_once()
    assert agent.record.state is UpdateState.ROLLED_BACK


class JournalAtLogTime(logging.Handler):
    """For each outcome line the runner logs, the state its journal file holds right then."""

    def __init__(self, journal: Path) -> None:
        super().__init__(logging.INFO)
        self.journal = journal
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for outcome in ("committed", "rolled back"):
            if f": {outcome} " in message:
                self.seen.append((outcome, json.loads(self.journal.read_bytes())["state"]))


def test_committed_and_rolled_back_are_logged_only_once_journaled(env: Backend) -> None:
    """The agent may be stopped at any instant: a log that says "committed" while the journal
    still says "trial" (the order before) tells an operator, or a test that stops the agent
    on that line, something no restart will find."""
    agent, sim = make_agent(env)
    watcher = JournalAtLogTime(agent.parts.journal.path)
    runner_log = logging.getLogger("agent.runner")
    level = runner_log.level
    runner_log.setLevel(logging.INFO)
    runner_log.addHandler(watcher)
    try:
        env.publish("1.0")
        agent.poll_once()
        sim.health_failing = True
        env.publish("2.0")
        agent.poll_once()
    finally:
        runner_log.removeHandler(watcher)
        runner_log.setLevel(level)
    assert watcher.seen == [("committed", "committed"), ("rolled back", "rolled_back")]


def _assert_refused(
    env: Backend, agent: Agent, sim: SimDevice, before: str, reason: FailureReason
) -> None:
    assert agent.record.state is UpdateState.FAILED
    assert agent.record.reason is reason
    status = sim.status()
    assert (status.active, status.committed, status.pending_trial) == (Slot.A, Slot.A, None)
    assert slot_digest(sim, Slot.A) == before
    assert Slot.B in sim.read_env().unbootable
    newest = last_report(env, agent.parts.device_id)  # the refusal reached the server
    assert (newest.state, newest.reason) == ("failed", reason.value)


def test_tampered_image_is_refused_and_running_slot_untouched(env: Backend) -> None:
    agent, sim = make_agent(env)
    before = slot_digest(sim, Slot.A)
    release = env.publish("1.0")
    stored = env.repo / "repository" / target_storage_name(release.target_path, release.sha256)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    agent.poll_once()
    _assert_refused(env, agent, sim, before, FailureReason.HASH_MISMATCH)
    assert "chunk" in agent.record.detail["error"]


def test_image_longer_than_signed_is_cut_off(env: Backend) -> None:
    agent, sim = make_agent(env)
    before = slot_digest(sim, Slot.A)
    release = env.publish("1.0")
    stored = env.repo / "repository" / target_storage_name(release.target_path, release.sha256)
    with stored.open("ab") as f:
        f.write(b"\0" * MIB)
    agent.poll_once()
    _assert_refused(env, agent, sim, before, FailureReason.LENGTH_MISMATCH)


def expire_timestamp(env: Backend) -> None:
    """Re-sign timestamp.json, properly, with an expiry an hour in the past."""
    path = env.repo / "repository" / "metadata" / "timestamp.json"
    md = Metadata[Timestamp].from_file(str(path))
    md.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    md.signed.version += 1
    md.signatures.clear()
    md.sign(load_signer(key_paths(env.repo, "timestamp")[0]))
    md.to_file(str(path))


def test_expired_timestamp_is_refused(env: Backend) -> None:
    agent, sim = make_agent(env)
    before = slot_digest(sim, Slot.A)
    env.publish("1.0")
    expire_timestamp(env)
    agent.poll_once()
    _assert_refused(env, agent, sim, before, FailureReason.METADATA)


def test_wrong_model_target_is_refused_even_if_the_server_points_at_it(env: Backend) -> None:
    agent, sim = make_agent(env)
    before = slot_digest(sim, Slot.A)
    other = env.publish("9.0", model="other-board")
    agent.consider(notice_for(other))  # a compromised server names another model's build
    _assert_refused(env, agent, sim, before, FailureReason.WRONG_MODEL)


def test_a_preview_build_is_refused_by_a_stable_device_even_if_the_server_points_at_it(
    env: Backend,
) -> None:
    agent, sim = make_agent(env)
    before = slot_digest(sim, Slot.A)
    preview = env.publish("9.0", channel="preview")  # signed by the preview role
    agent.consider(notice_for(preview, channel="stable"))  # a compromised server says stable
    _assert_refused(env, agent, sim, before, FailureReason.WRONG_CHANNEL)


def test_signed_version_older_than_running_is_refused(env: Backend) -> None:
    agent, sim = make_agent(env)
    first = env.publish("1.0")
    env.publish("2.0")
    agent.poll_once()
    assert agent.current_version == "2.0"
    running = sim.status().active
    before = slot_digest(sim, running)
    agent.consider(notice_for(first, release_version="3.0"))  # lies about the version
    assert agent.record.state is UpdateState.FAILED
    assert agent.record.reason is FailureReason.DOWNGRADE
    assert sim.status().active is running
    assert slot_digest(sim, running) == before


def test_reports_wait_in_the_outbox_while_the_server_is_away(env: Backend, tmp_path: Path) -> None:
    agent, _ = make_agent(env)
    env.publish("1.0")
    real_server = agent.parts.server
    agent.parts.server = ServerApi("http://127.0.0.1:9", "dev-1", "x")  # nothing listens there
    notice = real_server.poll().notice
    assert notice is not None
    agent.consider(notice)
    assert agent.record.state is UpdateState.COMMITTED
    assert len(agent.parts.outbox) == 5  # downloading .. committed, none acknowledged
    agent.parts.server = real_server
    agent.flush_reports()
    agent.flush_reports()  # sending twice must not double anything
    assert len(agent.parts.outbox) == 0
    states = env.reported_states("dev-1")
    assert states == ["idle", "downloading", "installed", "rebooting", "trial", "committed"]


def test_mqtt_notice_wakes_the_agent_long_before_its_poll(env: Backend, mosquitto_url: str) -> None:
    second_server = f"sqlite:///{env.workdir / 'server2.db'}"
    with running_backend(
        env.workdir, BOARD, db_url=second_server, broker_url=mosquitto_url
    ) as env2:
        sim = env2.provision("dev-mq")
        config = env2.agent_config(
            "dev-mq",
            health_deadline_s=HEALTH_DEADLINE_S,
            broker_url=env2.broker_url,
            poll_interval_s=600.0,
        )
        daemon = AgentDaemon(config, build_agent(config, boot=sim))
        with daemons_running([daemon]):
            _wait_for(lambda: daemon.doorbell is not None and daemon.doorbell.connected, 10)
            time.sleep(0.5)  # the first HTTP poll found nothing; now only MQTT can wake it
            env2.publish("1.0")
            _wait_for(lambda: env2.device_row("dev-mq").state == "committed", 30)
        assert sim.status().active is Slot.B


def _wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_clock_reset_to_1970_does_not_make_expired_metadata_fresh(
    env: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuf.ngclient._internal.trusted_metadata_set as tms

    agent, sim = make_agent(env)
    env.publish("1.0")
    agent.poll_once()  # a refresh succeeded today: the device now knows today is real
    assert agent.record.state is UpdateState.COMMITTED
    env.publish("2.0")
    expire_timestamp(env)

    class Epoch(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Epoch:
            return cls(1970, 1, 2, tzinfo=tz)

    fake = type("FakeDatetimeModule", (), {"datetime": Epoch, "timezone": tms.datetime.timezone})
    monkeypatch.setattr(tms, "datetime", fake)  # python-tuf's clock now says 1970
    clock = agent.parts.tuf.clock
    assert clock is not None
    clock.system_clock = lambda: Epoch.now(UTC)  # and so does the agent's own
    agent.parts.clock = lambda: Epoch.now(UTC).timestamp()
    running = sim.status().active
    agent.poll_once()
    assert agent.record.state is UpdateState.FAILED
    assert agent.record.reason is FailureReason.METADATA
    assert "expired" in agent.record.detail["error"]
    assert sim.status().active is running
    assert agent.current_version == "1.0"


# --------------------------------------------------------------------------- cancel


def from_another_thread(action: Callable[[], object]) -> None:
    """Run `action` on a thread of its own (as the MQTT thread would) and wait for it."""
    thread = threading.Thread(target=action)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the action blocked behind the running update"


def last_report(env: Backend, device_id: str) -> Report:
    return max(env.reports(device_id), key=lambda r: r.seq)


def assert_abandoned_before_the_trial(agent: Agent, sim: SimDevice, running: str) -> None:
    assert agent.record.state is UpdateState.FAILED
    assert agent.record.reason is FailureReason.CANCELLED
    status = sim.status()
    assert (status.active, status.committed, status.pending_trial) == (Slot.A, Slot.A, None)
    assert Slot.B in sim.read_env().unbootable
    assert slot_digest(sim, Slot.A) == running
    assert "b" not in agent.record.slot_versions


@pytest.mark.parametrize("kind", [CommandKind.CANCEL, CommandKind.ROLLBACK])
def test_a_cancel_stops_the_download_and_survives_a_restart(
    env: Backend, kind: CommandKind
) -> None:
    config = env.agent_config("dev-1", health_deadline_s=HEALTH_DEADLINE_S)
    sim = env.provision("dev-1")
    agent = build_agent(config, boot=sim)
    agent.resume()
    running = slot_digest(sim, Slot.A)
    env.publish("1.0")
    cancel = Command(command_id="c-1", kind=kind)
    fetcher = MidDownload(
        agent.parts.fetcher, lambda: from_another_thread(lambda: agent.handle_command(cancel))
    )
    agent.parts.fetcher = fetcher
    agent.poll_once()
    assert fetcher.received < 2 * MIB  # stopped long before the end of the 3 MiB
    assert_abandoned_before_the_trial(agent, sim, running)
    assert agent.record.detail["abandoned_in"] == "downloading"
    assert agent.record.detail["command"] == kind.value
    report = last_report(env, "dev-1")
    assert (report.state, report.reason) == ("failed", "cancelled")
    assert env.reported_states("dev-1") == ["idle", "downloading", "failed"]

    again = build_agent(config, boot=SimDevice(sim.root))  # a new process, same journal
    again.resume()
    again.poll_once()  # the same notice again: not started again
    assert_abandoned_before_the_trial(again, sim, running)
    env.publish("2.0")  # a new notice is
    again.poll_once()
    assert again.record.state is UpdateState.COMMITTED
    assert again.current_version == "2.0"


def test_a_cancel_queued_on_the_server_reaches_a_download_through_the_poll(env: Backend) -> None:
    agent, sim = make_agent(env)
    running = slot_digest(sim, Slot.A)
    env.publish("1.0")
    agent.parts.command_poll_s = 0.0  # ask for commands before every piece (no MQTT here)
    queued: list[QueuedCommand] = []
    agent.parts.fetcher = MidDownload(
        agent.parts.fetcher, lambda: queued.append(env.admin.send_command("dev-1", CANCEL))
    )
    agent.poll_once()
    assert_abandoned_before_the_trial(agent, sim, running)
    assert agent.record.detail["command_id"] == queued[0].command_id
    row = env.device_row("dev-1")
    assert (row.state, row.current_version) == ("failed", "")
    assert last_report(env, "dev-1").reason == FailureReason.CANCELLED.value
    assert agent.parts.server.poll().commands == ()  # delivered once, not again


def test_a_cancel_during_the_trial_rolls_back(env: Backend) -> None:
    config = env.agent_config("dev-1", health_deadline_s=HEALTH_DEADLINE_S)
    sim = env.provision("dev-1")
    agent = build_agent(config, boot=sim)
    cancel = Command(command_id="c-2", kind=CommandKind.CANCEL)

    def healthy_but_cancelled() -> None:
        from_another_thread(lambda: agent.handle_command(cancel))

    agent.parts.health_checks.append(CallableCheck("meanwhile", healthy_but_cancelled))
    agent.resume()
    env.publish("1.0")
    agent.poll_once()
    assert agent.record.state is UpdateState.ROLLED_BACK
    assert agent.record.reason is FailureReason.CANCELLED
    assert agent.record.detail["abandoned_in"] == "trial"
    status = sim.status()
    assert (status.active, status.committed, status.trial) == (Slot.A, Slot.A, False)
    assert env.reported_states("dev-1")[-3:] == ["trial", "rolling_back", "rolled_back"]
    assert last_report(env, "dev-1").reason == FailureReason.CANCELLED.value
    agent.poll_once()  # the same notice: not tried again
    assert agent.record.state is UpdateState.ROLLED_BACK


def test_a_cancel_at_rest_changes_nothing_but_is_taken(
    env: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    agent, sim = make_agent(env)
    env.publish("1.0")
    agent.poll_once()
    states = env.reported_states("dev-1")
    env.admin.send_command("dev-1", CANCEL)
    with caplog.at_level(logging.INFO, logger="agent.runner"):
        agent.poll_once()
    assert agent.record.state is UpdateState.COMMITTED
    assert sim.status().committed is Slot.B
    assert env.reported_states("dev-1") == states
    assert "no update to abandon" in caplog.text
    assert agent.parts.server.poll().commands == ()


def test_update_policies_ask_the_injected_clock(env: Backend) -> None:
    agent, _ = make_agent(env)
    agent.parts.policies = [MaintenanceWindow(dt_time(2, 0), dt_time(3, 0))]
    agent.parts.clock = lambda: datetime(2030, 1, 1, 12, 0).timestamp()  # device-local noon
    env.publish("1.0")
    agent.poll_once()
    assert agent.record.state is UpdateState.DEFERRED
    agent.parts.clock = lambda: datetime(2030, 1, 2, 2, 30).timestamp()
    agent.poll_once()
    assert agent.record.state is UpdateState.COMMITTED
