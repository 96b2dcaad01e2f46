"""Two server replicas on PostgreSQL behind a real HAProxy: the once-only work (the rollout
scheduler) runs on exactly one; SIGKILL that one and the other takes it over within a tick or
two, while requests through HAProxy keep being answered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import require_tools

from lab.replicas import ServerReplicas, haproxy_binary, server_replicas

pytestmark = pytest.mark.postgres
ADMIN = "admin-token-for-the-replicas"
WAIT_S = 30.0
TAKEOVER_TICKS = 3  # the survivor's standby ticks between the kill and its leading


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path) -> Iterator[ServerReplicas]:
    require_tools("haproxy")
    binary = haproxy_binary()
    assert binary is not None
    env = {"OTA_ADMIN_TOKEN": ADMIN, "OTA_ROLLOUT_TICK_S": "0.2"}
    with server_replicas(binary, pg_url, tmp_path / "replicas", env=env) as running:
        yield running


def scheduler(replicas: ServerReplicas, index: int) -> dict[str, Any]:
    workers = replicas.health(index)["workers"]
    assert isinstance(workers, list)
    return next(w for w in workers if w["name"] == "rollout-scheduler")


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_S}s: {what}"
        time.sleep(0.05)


def test_the_scheduler_runs_on_one_replica_and_moves_when_it_is_killed(
    replicas: ServerReplicas,
) -> None:
    wait_for(lambda: scheduler(replicas, 0)["ticks"] + scheduler(replicas, 1)["ticks"] >= 5, "5")
    states = [scheduler(replicas, i) for i in (0, 1)]
    assert sorted(s["leading"] for s in states) == [False, True]
    leader = next(i for i, s in enumerate(states) if s["leading"])
    survivor = 1 - leader
    assert scheduler(replicas, survivor)["ticks"] == 0  # it never ran the work
    assert scheduler(replicas, survivor)["standby"] >= 1

    with httpx.Client(base_url=replicas.url, timeout=10) as through_haproxy:
        releases = "/api/v1/releases"
        auth = {"Authorization": f"Bearer {ADMIN}"}
        assert through_haproxy.get(releases, headers=auth).status_code == 200
        replicas.kill(leader)
        standby_at_kill = scheduler(replicas, survivor)["standby"]
        answers = [through_haproxy.get(releases, headers=auth).status_code for _ in range(20)]
        wait_for(lambda: scheduler(replicas, survivor)["leading"], "the survivor leads")
        after = scheduler(replicas, survivor)
        answers += [through_haproxy.get("/health").status_code for _ in range(10)]

    assert after["standby"] - standby_at_kill <= TAKEOVER_TICKS
    assert answers == [200] * 30  # not one request lost to the dead replica
