"""MQTT commands survive the agent's death, with a real Mosquitto keeping persistent sessions.

The agent runs as a real process (lab.agentproc). A command is published on the device's
topic at QoS 1, as the server does, to a broker the server does not know (so the server's HTTP
poll never hands it out: only MQTT and the agent's disk can bring it back). The crash harness
(lab.crashagent) kills the agent around the store of the command; a plain `ota-agent run` on
the same directories then runs it exactly once. Each test is also run with the store and the
acknowledgement swapped (`ack_first`), and must then fail: strict xfail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lab.agentproc import (
    AgentProcess,
    agent_command,
    agent_process,
    crash_agent_command,
    toml_config,
)
from lab.fleet import KIB, Backend, Board, running_backend
from lab.net import LOOPBACK, free_port
from lab.processes import mosquitto, mosquitto_binary, persistent_mosquitto_conf
from server.schemas import CommandIn
from wire import Command, CommandKind, device_cmd_topic

pytestmark = pytest.mark.mosquitto

BOARD = Board(model="board", slot_size=256 * KIB, image_size=128 * KIB, chunk_size=64 * KIB)
DEVICE = "mqtt-dev"
SWAPPED = pytest.mark.xfail(strict=True, reason="acknowledged before stored: the command is lost")
ORDERS = [
    pytest.param(False, id="store-then-ack"),
    pytest.param(True, id="ack-first", marks=SWAPPED),
]
REDELIVERY_GRACE_S = 2.0  # after the first run, time for a redelivery to (wrongly) run it again


@dataclass
class Broker:
    """A persistent mosquitto on a fixed port that a test can restart."""

    binary: str
    workdir: Path
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://{LOOPBACK}:{self.port}"

    @contextmanager
    def running(self) -> Iterator[None]:
        conf = persistent_mosquitto_conf(self.workdir, self.port)
        with mosquitto(self.binary, conf, self.port, self.workdir / "mosquitto.log"):
            yield


@dataclass
class Device:
    """One simulated board's agent config; its processes end with `stack`."""

    config_file: Path
    workdir: Path
    backend: Backend
    stack: ExitStack

    def start(self, name: str, *, die: str = "", ack_first: bool = False) -> AgentProcess:
        command = (
            crash_agent_command(self.config_file, die, ack_first=ack_first)
            if die
            else agent_command(self.config_file)
        )
        return self.stack.enter_context(agent_process(command, self.workdir / f"{name}.log"))


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto not installed")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    return Broker(binary, workdir, free_port())


@pytest.fixture
def device(tmp_path: Path, broker: Broker) -> Iterator[Device]:
    with running_backend(tmp_path / "lab", BOARD) as backend, ExitStack() as stack:
        sim = backend.provision(DEVICE)
        config = backend.agent_config(
            DEVICE,
            broker_url=broker.url,
            poll_interval_s=3600.0,  # only a (re)connect makes the agent ask the server
            poll_jitter=0.0,
            slot_backend="sim",
            slot_options={"root": str(sim.root)},
        )
        config_file = tmp_path / "agent.toml"
        config_file.write_text(toml_config(config))
        yield Device(config_file, tmp_path, backend, stack)


def publish_command(broker: Broker, command: Command) -> None:
    """As the server does: QoS 1 on the device's command topic, once the broker has it."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-server")
    client.connect(LOOPBACK, broker.port)
    client.loop_start()
    try:
        client.publish(device_cmd_topic(DEVICE), command.to_json(), qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def check_now(command_id: str) -> Command:
    return Command(command_id=command_id, kind=CommandKind.CHECK_NOW)


def runs_of(agent: AgentProcess, command: Command) -> int:
    """How often the agent ran `command` (it logs each run with the command's id)."""
    return agent.count(f"command check_now ({command.command_id})")


def killed_with(
    device: Device, broker: Broker, command: Command, die: str, ack_first: bool
) -> None:
    """The crash harness hears `command` and dies at `die`."""
    doomed = device.start("doomed", die=die, ack_first=ack_first)
    doomed.wait_for(" connected")
    publish_command(broker, command)
    doomed.proc.wait(timeout=15)
    assert "crash harness: killed" in doomed.text(), doomed.text()


def ran_once(agent: AgentProcess, command: Command) -> None:
    agent.wait_for(f"({command.command_id})", timeout=20)
    time.sleep(REDELIVERY_GRACE_S)
    assert runs_of(agent, command) == 1, agent.text()


@pytest.mark.parametrize("ack_first", ORDERS)
def test_killed_between_storing_and_acking_the_command_runs_once_after_restart(
    device: Device, broker: Broker, ack_first: bool
) -> None:
    command = check_now("between-1")
    with broker.running():
        killed_with(device, broker, command, "between", ack_first)
        assert (device.backend.device_dir(DEVICE) / "agent" / "commands").is_dir()
        agent = device.start("after")
        ran_once(agent, command)  # from disk; the broker's redelivery is known as run already
        agent.stop()


@pytest.mark.parametrize("ack_first", ORDERS)
def test_killed_before_storing_the_command_the_broker_delivers_it_again(
    device: Device, broker: Broker, ack_first: bool
) -> None:
    command = check_now("before-1")
    with broker.running():
        killed_with(device, broker, command, "before-store", ack_first)
        agent = device.start("after")
        agent.wait_for("session resumed")
        ran_once(agent, command)
        agent.stop()


@pytest.mark.parametrize("ack_first", ORDERS)
def test_after_a_broker_restart_the_agent_asks_the_server_what_to_run(
    device: Device, broker: Broker, ack_first: bool
) -> None:
    heard = check_now("restart-1")
    with broker.running():
        killed_with(device, broker, heard, "between", ack_first)
    with broker.running():  # the same broker again, its sessions kept on disk
        agent = device.start("after")
        ran_once(agent, heard)
    queued = device.backend.admin.send_command(DEVICE, CommandIn(kind=CommandKind.CHECK_NOW))
    with broker.running():  # while it was down the server queued a command: HTTP only
        agent.wait_for(" connected", times=2)
        agent.wait_for(f"({queued.command_id})", timeout=20)
        assert runs_of(agent, heard) == 1
        agent.stop()
