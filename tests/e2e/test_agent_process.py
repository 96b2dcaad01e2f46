"""`ota-agent run` as a device runs it: a real process, stopped by SIGTERM or Ctrl-C within
seconds whatever it is doing, and a log that says what it does, one INFO line per event."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.agentproc import AgentProcess, agent_command, agent_process, toml_config
from lab.fleet import KIB, Backend, Board, running_backend

BOARD = Board(model="board", slot_size=256 * KIB, image_size=128 * KIB, chunk_size=64 * KIB)
DEVICE = "proc-dev"
STOPS_WITHIN_S = 5.0
WORSE_THAN_INFO = re.compile(r" (WARNING|ERROR|CRITICAL) ")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    with running_backend(tmp_path / "lab", BOARD) as running:
        yield running


def start(backend: Backend, tmp_path: Path, **fields: Any) -> Iterator[AgentProcess]:
    sim = backend.provision(DEVICE)
    config = backend.agent_config(
        DEVICE,
        poll_interval_s=3600.0,  # a whole hour asleep unless told to stop
        slot_backend="sim",
        slot_options={"root": str(sim.root)},
        **fields,
    )
    config_file = tmp_path / "agent.toml"
    config_file.write_text(toml_config(config))
    with agent_process(agent_command(config_file), tmp_path / "agent.log") as agent:
        yield agent


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_an_idle_agent_stops_within_seconds(
    backend: Backend, tmp_path: Path, how: signal.Signals
) -> None:
    for agent in start(backend, tmp_path):
        agent.wait_for("reports delivered")  # the first cycle is over: now it waits an hour
        assert agent.stop(how) < STOPS_WITHIN_S
        assert agent.proc.returncode == 0
        assert f"stopped on {how.name}" in agent.text()


def test_an_agent_stops_within_seconds_in_the_middle_of_a_health_check(
    backend: Backend, tmp_path: Path
) -> None:
    slow_check = {"type": "command", "argv": ["sleep", "120"], "name": "slow"}
    backend.publish("1.0")
    for agent in start(backend, tmp_path, health_checks=[slow_check], health_deadline_s=300.0):
        agent.wait_for("trial armed")
        assert agent.stop() < STOPS_WITHIN_S
        assert "stopped on SIGTERM" in agent.text()


def test_a_normal_install_says_each_step_at_info_and_nothing_worse(
    backend: Backend, tmp_path: Path, mosquitto_url: str
) -> None:
    passing = {"type": "command", "argv": ["true"], "name": "app"}
    backend.publish("1.0")
    for agent in start(backend, tmp_path, broker_url=mosquitto_url, health_checks=[passing]):
        agent.wait_for("committed 1.0")
        agent.wait_for("reports delivered", times=5)  # the last: committed
        agent.stop()
        log = agent.text()
    expected = [
        "ota-agent 0.1.0 started: slot a, channel stable, server http://",
        f"broker {mosquitto_url.removeprefix('mqtt://')} connected",
        "update found: 1.0",
        "downloading board/stable/1.0/",
        "verified board/stable/1.0/",
        "trial armed: slot b boots 1.0 on trial; rebooting",
        "health checks passed on slot b",
        "committed 1.0 on slot b",
        "reports delivered: 1",
        "stopped on SIGTERM",
    ]
    assert [line for line in expected if line not in log] == [], log
    assert not WORSE_THAN_INFO.findall(log), log
    assert "corrupt" not in log.lower(), log
