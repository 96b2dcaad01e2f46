"""A beta tester's week on a real agent against the real server: join preview with an F-code,
get the preview build, report what broke (with logs) and vote through `ota-agent`, leave
preview, and stay on the preview build until stable passes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from test_agent_e2e import BOARD

from agent.cli import main as ota_agent
from agent.config import load_config
from agent.daemon import build_agent
from agent.runner import Agent
from hardware.sim import SimDevice
from lab.fleet import Backend, running_backend
from server.auth import Role, issue_token
from server.db import make_engine, make_sessions
from server.models import Feedback
from wire import UpdateState


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Backend]:
    """As tests/e2e/test_agent_e2e.py's: the same board and builds."""
    with running_backend(tmp_path, BOARD) as backend:
        yield backend


def role_token(env: Backend, role: Role) -> str:
    engine = make_engine(f"sqlite:///{env.workdir / 'server.db'}")
    try:
        with make_sessions(engine)() as session:
            token = issue_token(session, role=role, subject=f"{role.value}-1")
            session.commit()
            return token
    finally:
        engine.dispose()


def device_config(env: Backend, device_id: str) -> Path:
    credential = env.enroll(device_id)
    env.device_dir(device_id).mkdir(parents=True)
    (env.device_dir(device_id) / "credential").write_text(credential)
    path = env.device_dir(device_id) / "agent.toml"
    path.write_text(
        f'device_id = "{device_id}"\nmodel = "{env.board.model}"\nchannel = "stable"\n'
        f'server_url = "{env.server_url}"\ndata_dir = "agent"\n'
        f'trusted_root = "{env.repo / "root.json"}"\ncredential_file = "credential"\n'
        "[health]\ndeadline_s = 5.0\n"
    )
    return path


def start_agent(env: Backend, config_path: Path) -> tuple[Agent, SimDevice]:
    config = load_config(config_path)
    sim = env.provision(config.device_id)
    agent = build_agent(config, boot=sim)
    agent.resume()
    return agent, sim


def http(env: Backend, role: Role) -> httpx.Client:
    headers = {"Authorization": f"Bearer {role_token(env, role)}"}
    return httpx.Client(base_url=env.server_url, headers=headers, timeout=20)


def test_a_tester_gets_preview_reports_votes_leaves_and_is_never_downgraded(
    env: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = device_config(env, "tester-1")
    agent, sim = start_agent(env, config_path)
    env.publish("1.0")
    agent.poll_once()
    assert agent.current_version == "1.0"
    with http(env, Role.RELEASE_ENGINEER) as engineer:
        answer = engineer.post("/api/v1/fcodes", json={"count": 1, "expires_in_s": 600})
        (code,) = answer.json()["codes"]

        assert ota_agent(["join-preview", "--config", str(config_path), "--code", code]) == 0
        assert '"channel": "preview"' in capsys.readouterr().out
        assert load_config(config_path).channel == "preview"  # kept in the data dir
        env.publish("2.0", channel="preview")
        agent.poll_once()
        assert agent.current_version == "2.0"

        said = ["feedback", "--config", str(config_path), "camera app crashes", "--attach-logs"]
        assert ota_agent([*said, "--category", "camera"]) == 0
        capsys.readouterr()
        ranked = engineer.get("/api/v1/feedback/surfacing", params={"build": "2.0"}).json()
        (group,) = ranked["groups"]  # the build defaulted to the running one
        assert (group["title"], group["devices"], group["category"]) == (
            "camera app crashes", 1, "camera",
        )  # fmt: skip
        assert ota_agent(["vote", "--config", str(config_path), str(group["group_id"])]) == 0
        assert '"votes": 1' in capsys.readouterr().out
        assert ota_agent(["vote", "--config", str(config_path), str(group["group_id"])]) == 1
        assert "HTTP 409" in capsys.readouterr().err
    logs = _stored_logs(env)
    assert "== journal ==" in logs
    assert '"current_version": "2.0"' in logs

    assert ota_agent(["leave-preview", "--config", str(config_path)]) == 0
    assert load_config(config_path).channel == "stable"
    assert ota_agent(["vote", "--config", str(config_path), str(group["group_id"])]) == 1
    assert "only beta testers vote" in capsys.readouterr().err
    assert ota_agent(["feedback", "--config", str(config_path), "still on 2.0, fine"]) == 0
    states_before = env.reported_states("tester-1")
    running = sim.status().active
    agent.poll_once()  # stable's 1.0 is what the server now offers: never installed
    assert agent.current_version == "2.0"
    assert agent.record.state is UpdateState.COMMITTED
    assert sim.status().active is running
    assert env.reported_states("tester-1") == states_before
    assert env.device_row("tester-1").channel == "stable"

    env.publish("2.1")  # stable passes the preview build: now it moves on
    agent.poll_once()
    assert agent.current_version == "2.1"
    _a_spent_code_changes_nothing(env, code, capsys)


def _a_spent_code_changes_nothing(env: Backend, code: str, capsys: Any) -> None:
    config_path = device_config(env, "tester-2")
    assert ota_agent(["join-preview", "--config", str(config_path), "--code", code]) == 1
    assert "used already" in capsys.readouterr().err
    assert load_config(config_path).channel == "stable"
    assert not (config_path.parent / "agent" / "channel").exists()
    assert env.device_row("tester-2").channel == "stable"


def _stored_logs(env: Backend) -> str:
    engine = make_engine(f"sqlite:///{env.workdir / 'server.db'}")
    try:
        with make_sessions(engine)() as session:
            return str(session.scalar(select(Feedback.logs)))
    finally:
        engine.dispose()
