"""Staged rollouts on a simulated fleet: the real server, a real signed repository, real
agents on simulated devices, driven by `poll_once()`; the scheduler's tick is the
`POST /rollouts/evaluate` route (same code), so nothing sleeps on a schedule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.runner import Agent
from agent.server_api import ServerApi
from hardware.sim import SimDevice
from lab.fleet import KIB, Backend, Board, running_backend
from server.api_client import ApiError
from server.schemas import RolloutIn
from wire import StatusReport, UpdateState
from wire.rollout import in_rollout

MODEL = "board"
BOARD = Board(model=MODEL, slot_size=256 * KIB, image_size=96 * KIB, chunk_size=32 * KIB)
FLEET = 24


@dataclass
class Fleet:
    backend: Backend
    agents: dict[str, tuple[Agent, SimDevice]]

    def publish(self, version: str, *, percentage: float) -> int:
        """Sign a small image, register it held at `percentage` (0: for a staged rollout)."""
        release = self.backend.sign(version)
        return self.backend.register(release, percentage=percentage).id

    def poll_all(self) -> None:
        for agent, _ in self.agents.values():
            agent.poll_once()

    def evaluate(self, rollout_id: str) -> dict[str, Any]:
        self.backend.admin.evaluate_rollouts()
        return self.backend.admin.rollout(rollout_id).model_dump(mode="json")

    def change(self, rollout_id: str, action: str, reason: str = "") -> dict[str, Any]:
        changed = self.backend.admin.change_rollout(rollout_id, action, reason)
        return changed.model_dump(mode="json")

    def started(self, version: str) -> set[str]:
        """Devices that left their old version for `version` (any report targeting it)."""
        reports = self.backend.admin.reports(limit=10000)
        return {
            r.device_id for r in reports if r.target_version == version and r.state != "deferred"
        }


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    # the tests tick through POST /rollouts/evaluate
    with running_backend(tmp_path, BOARD, rollout_tick_s=0) as backend:
        agents = {
            f"dev-{n:02d}": backend.start_agent(f"dev-{n:02d}", health_deadline_s=2.0)
            for n in range(FLEET)
        }
        yield Fleet(backend, agents)


def staged(fleet: Fleet, release_id: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "release_id": release_id,
        "waves": [20, 50, 100],
        "gates": {
            "min_success_rate": 0.9,
            "max_rollback_rate": 0.1,
            "min_devices": 1,
            "min_soak_s": 0,
        },
        **overrides,
    }
    rollout = fleet.backend.admin.create_rollout(RolloutIn.model_validate(body))
    return rollout.model_dump(mode="json")


def test_a_good_build_reaches_every_device_wave_by_wave(fleet: Fleet) -> None:
    rollout = staged(fleet, fleet.publish("1.0", percentage=0))
    assert (rollout["state"], rollout["percentage"]) == ("active", 20)
    seen = []
    for _ in range(6):
        fleet.poll_all()
        status = fleet.evaluate(rollout["rollout_id"])
        seen.append(status["percentage"])
        if status["state"] == "completed":
            break
    assert status["state"] == "completed", status
    assert seen == [50, 100, 100]
    assert all(a.current_version == "1.0" for a, _ in fleet.agents.values())
    assert status["numbers"]["success"] == FLEET
    assert [a["action"] for a in status["audit"]] == ["create", "advance", "advance", "complete"]


def test_a_build_failing_health_checks_pauses_at_the_first_wave(fleet: Fleet) -> None:
    fleet.publish("1.0", percentage=100)
    fleet.poll_all()
    assert all(a.current_version == "1.0" for a, _ in fleet.agents.values())
    for _, sim in fleet.agents.values():
        sim.health_failing = True
    rollout = staged(fleet, fleet.publish("2.0", percentage=0))
    rollout_id = rollout["rollout_id"]
    fleet.poll_all()
    status = fleet.evaluate(rollout_id)
    assert status["state"] == "paused", status
    assert status["paused_gate"] in ("success_rate", "rollback_rate")
    assert status["paused_gate"] in status["paused_reason"]
    assert (status["wave_index"], status["paused"]) == (0, True)
    for _ in range(2):  # devices keep polling; a paused rollout starts nobody new
        fleet.poll_all()
        fleet.evaluate(rollout_id)
    first_wave = {d for d in fleet.agents if in_rollout(d, rollout_id, 20)}
    affected = fleet.started("2.0")
    assert affected, "the first wave should have tried the build"
    assert affected <= first_wave
    assert all(a.current_version == "1.0" for a, _ in fleet.agents.values())
    # the release engineer overrides with a reason: recorded, and the rollout moves on
    after = fleet.change(rollout_id, "override", "known flake")
    assert (after["state"], after["percentage"]) == ("active", 50)
    override = [a for a in after["audit"] if a["action"] == "override"]
    assert override[0]["reason"] == "known flake"
    assert override[0]["detail"]["gate"] == status["paused_gate"]


def test_a_device_that_starts_and_goes_silent_counts_as_failed(fleet: Fleet) -> None:
    silent = "dev-silent"
    credential = fleet.backend.enroll(silent)
    release_id = fleet.publish("1.0", percentage=0)
    rollout = staged(
        fleet,
        release_id,
        waves=[100],
        stuck_timeout_s=1.0,
        gates={"min_success_rate": 0.99, "min_devices": FLEET + 1, "min_soak_s": 0},
    )
    fleet.poll_all()
    report = StatusReport(
        device_id=silent,
        seq=1,
        state=UpdateState.DOWNLOADING,
        current_version="",
        target_version="1.0",
    )
    ServerApi(fleet.backend.server_url, silent, credential).send_reports([report])
    status = fleet.evaluate(rollout["rollout_id"])
    assert (status["state"], status["numbers"]["gate"]) == ("active", "min_devices")
    assert status["numbers"]["in_progress"] == 1
    time.sleep(1.2)
    status = fleet.evaluate(rollout["rollout_id"])
    assert status["state"] == "paused", status
    assert status["paused_gate"] == "success_rate"
    assert (status["numbers"]["failed"], status["numbers"]["success"]) == (1, FLEET)


def test_abort_leaves_devices_that_have_not_started_alone(fleet: Fleet) -> None:
    rollout = staged(fleet, fleet.publish("1.0", percentage=0))
    aborted = fleet.change(rollout["rollout_id"], "abort", "x")
    assert (aborted["state"], aborted["percentage"], aborted["paused"]) == ("aborted", 0, True)
    fleet.poll_all()
    assert fleet.started("1.0") == set()
    with pytest.raises(ApiError) as exc:
        fleet.change(rollout["rollout_id"], "resume")
    assert exc.value.status == 409
