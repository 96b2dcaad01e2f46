"""`ota-agent run`: assemble the agent from its config and keep it running.

One main loop per device does all the work; the MQTT thread only files what it heard and
rings the bell. The loop wakes on the bell, after every (re)connect, and on a jittered poll
timer, and each time asks the server over HTTP what to run: MQTT is never the only path.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
import queue
import random
import re
import threading
from pathlib import Path

from agent.config import AgentConfig, channel_override, current_channel
from agent.doorbell import Doorbell
from agent.errors import AgentError
from agent.fetcher import make_fetcher
from agent.health import CallableCheck, HealthCheck, health_checks_from_config
from agent.identity import broker_secret
from agent.journal import Journal
from agent.outbox import Outbox
from agent.policy import policies_from_config
from agent.runner import Agent, AgentParts, jittered
from agent.server_api import device_api
from agent.trusted_clock import TRUSTED_TIME_FILE, TrustedClock
from agent.tuf_client import TufClient
from durable import atomic_write, ensure_dir, move_aside, replace
from hardware.bootcontrol import BootControl
from hardware.registry import open_boot_control
from wire import (
    AvailabilityNotice,
    Command,
    ProtocolError,
    channel_topic,
    device_cmd_topic,
)

log = logging.getLogger(__name__)
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DONE_SUFFIX = ".done"  # a command that ran: `<command_id>.done` in the commands directory
KEEP_DONE = 200


def build_agent(config: AgentConfig, boot: BootControl | None = None) -> Agent:
    """Everything the runner needs, from the config (a given `boot` wins over the config)."""
    if boot is None:
        boot = open_boot_control(config.slot_backend, config.slot_options)
    try:
        trusted_root = config.trusted_root.read_bytes()
    except OSError as exc:
        where = config.trusted_root
        raise AgentError(f"cannot read trusted root {where}: {exc.strerror}") from None
    config.data_dir.mkdir(parents=True, exist_ok=True)
    fetcher = make_fetcher()
    tuf = TufClient(
        config.data_dir / "tuf",
        config.resolved_metadata_url,
        config.resolved_targets_url,
        bootstrap_root=trusted_root,
        fetcher=fetcher,
        clock=TrustedClock(config.data_dir / TRUSTED_TIME_FILE),
    )
    server = device_api(config)
    server.trust_source = tuf.trusted_timestamp  # each poll tells the server (staleness)
    parts = AgentParts(
        device_id=config.device_id,
        model=config.model,
        boot=boot,
        tuf=tuf,
        fetcher=fetcher,
        server=server,
        journal=Journal(config.data_dir / "journal.json"),
        outbox=Outbox(config.data_dir / "outbox"),
        channel=functools.partial(current_channel, config),
        health_checks=_health_checks(config, boot),
        policies=policies_from_config(config.policy),
        health_deadline_s=config.health_deadline_s,
        health_retry_s=config.health_retry_s,
        initial_version=_initial_version(config),
        command_poll_s=config.poll_interval_s,
        delta_dir=config.data_dir / "delta",
    )
    return Agent(parts)


def _health_checks(config: AgentConfig, boot: BootControl) -> list[HealthCheck]:
    checks = health_checks_from_config(config.health_checks)
    device_check = getattr(boot, "check_health", None)
    if callable(device_check):  # the simulated device's "make health fail" switch
        checks.insert(0, CallableCheck("device", device_check))
    return checks


# The whole project from a checkout, or the device's own wheel (agent/packaging/build.py).
DISTRIBUTIONS = ("orangefriday", "orangefriday-agent")


def agent_version() -> str:
    """This agent's own version (the installed package's)."""
    for name in DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "(not installed)"


def _initial_version(config: AgentConfig) -> str:
    if not config.version_file:
        return ""
    try:
        return Path(config.version_file).read_text().strip()
    except OSError:
        return ""


class AgentDaemon:
    def __init__(self, config: AgentConfig, agent: Agent, *, rng: random.Random | None = None):
        # a beta tester's joined channel wins, also over a config not read by load_config
        override = channel_override(config.data_dir)
        self.config = dataclasses.replace(config, channel=override) if override else config
        config = self.config
        self.agent = agent
        self._rng = rng or random.Random()  # noqa: S311  # poll jitter spreads load, guards nothing
        self._wake = threading.Event()
        # Storing a heard command and marking a handled one done must not interleave: a
        # redelivery checked between the two would be stored again and run twice.
        self._commands_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[AvailabilityNotice | Command] = queue.SimpleQueue()
        self.doorbell: Doorbell | None = None
        if config.brokers:
            secret = config.broker_secret or broker_secret(config.data_dir)
            self.doorbell = Doorbell(
                config.brokers,
                device_id=config.device_id,
                channel=config.channel,
                model=config.model,
                on_message=self._heard,
                on_connected=self._wake.set,
                # the broker knows each device by its id and its own broker secret (ACLs)
                username=config.device_id if secret else "",
                password=secret,
                ca_file=config.broker_ca,
            )
            agent.parts.reporter = self.doorbell

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set (and the daemon woken: `wake`), or an exception ends it."""
        self._log_start()
        self.agent.resume()
        if self.doorbell is not None:
            self.doorbell.start()
        try:
            while not stop.is_set():
                self.cycle()
                delay = jittered(self.config.poll_interval_s, self.config.poll_jitter, self._rng)
                self._wake.wait(delay)
                self._wake.clear()
        finally:
            if self.doorbell is not None:
                self.doorbell.stop()

    def _log_start(self) -> None:
        config, agent = self.config, self.agent
        log.info(
            "%s: ota-agent %s started: slot %s, channel %s, server %s, broker %s",
            config.device_id,
            agent_version(),
            agent.parts.boot.status().active.value,
            config.channel,
            config.server_url,
            ", ".join(config.brokers) or "(none: HTTP polls only)",
        )

    def wake(self) -> None:
        self._wake.set()

    def cycle(self) -> None:
        """Handle what MQTT brought, then ask the server over HTTP, then send reports."""
        for command in self._stored_commands():
            self.agent.handle_command(command)
            self._mark_done(command)
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, AvailabilityNotice):
                self.agent.consider(item)
        try:
            self.agent.poll_once()
        except AgentError as exc:
            log.info("%s: poll failed: %s", self.config.device_id, exc)
        self.agent.flush_reports()

    @property
    def _commands_dir(self) -> Path:
        return self.config.data_dir / "commands"

    def _store_command(self, command: Command) -> bool:
        """Keep `command` on disk until it is run; False when it was run already (the broker
        delivers again what it never saw acknowledged)."""
        if not _SAFE_ID.fullmatch(command.command_id):
            raise ProtocolError(f"unusable command id {command.command_id!r}")
        with self._commands_lock:
            if self._done_path(command).exists():
                log.info(
                    "%s: command %s was run already", self.config.device_id, command.command_id
                )
                return False
            stored = self._commands_dir / f"{command.command_id}.json"
            if stored.exists():  # heard before a crash and not yet run: it runs once, from disk
                return False
            ensure_dir(self._commands_dir)
            atomic_write(stored, command.to_json())
            return True

    def _done_path(self, command: Command) -> Path:
        return self._commands_dir / f"{command.command_id}{DONE_SUFFIX}"

    def _mark_done(self, command: Command) -> None:
        """Remember that `command` ran (a redelivery must not run it again); the oldest
        marks go once there are more than `KEEP_DONE`."""
        with self._commands_lock:
            replace(self._commands_dir / f"{command.command_id}.json", self._done_path(command))
        done = sorted(self._commands_dir.glob(f"*{DONE_SUFFIX}"), key=lambda p: p.stat().st_mtime)
        for old in done[:-KEEP_DONE]:
            old.unlink(missing_ok=True)

    def _stored_commands(self) -> list[Command]:
        """Commands heard over MQTT, oldest first; they survive a crash until handled."""
        if not self._commands_dir.is_dir():
            return []
        paths = sorted(self._commands_dir.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        commands = []
        for path in paths:
            try:
                commands.append(Command.from_json(path.read_bytes()))
            except ProtocolError:
                move_aside(path, "corrupt")
        return commands

    def _heard(self, topic: str, payload: bytes) -> None:
        try:
            if topic == channel_topic(self.config.channel, self.config.model):
                if payload:  # an empty retained message clears the notice
                    self._inbox.put(AvailabilityNotice.from_json(payload))
            elif topic == device_cmd_topic(self.config.device_id):
                command = Command.from_json(payload)
                if not self._store_command(command):  # durable before the broker gets its ack
                    return
                self.agent.note_command(command)  # a cancel stops a running download now
                self._inbox.put(command)
        except ProtocolError as exc:
            log.warning("%s: ignored a bad message on %s: %s", self.config.device_id, topic, exc)
            return
        self._wake.set()
