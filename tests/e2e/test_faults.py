"""Faults survived, with real processes: a handful of `ota-agent run` devices in a staged
rollout while a part dies by SIGKILL and comes back — the single Mosquitto, one node of the
NATS cluster, a server replica behind HAProxy (mid-ingestion), every replica at once — or
while some devices lose the network for a while (`lab.flakylink`).
Afterwards every report each device produced is stored exactly once, and the rollout's
counts equal what the devices say (each logged its commit of the new version)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tools, wait_until

from agent.doorbell import first_broker
from agent.outbox import COUNTER_NAME, Outbox
from durable import read_json
from lab.agentproc import AgentProcess, agent_command, agent_process, toml_config
from lab.flakylink import FlakyLink, flaky_link
from lab.fleet import ADMIN_TOKEN, ENROLLMENT_TOKEN, KIB, Backend, Board, running_backend
from lab.natscluster import nats_binary, nats_cluster
from lab.net import free_port
from lab.processes import mosquitto, mosquitto_binary, persistent_mosquitto_conf
from lab.replicas import ServerReplicas, haproxy_binary, server_replicas
from server.api_models import RolloutStatus
from server.schemas import RolloutIn
from server.settings import RateLimitConfig
from signing.keys import init_keys

pytestmark = pytest.mark.slow
BOARD = Board(model="board", slot_size=256 * KIB, image_size=128 * KIB, chunk_size=64 * KIB)
DEVICES = 4
VERSION = "1.1"
WAIT_S = 120.0
TICK_S = "0.3"
OFFLINE_S = 35.0  # longer than the agent's read time-outs: 20 s API, 30 s download (agent/)
PASSING = {"type": "command", "argv": ["true"], "name": "app"}


@dataclass
class Device:
    device_id: str
    agent: AgentProcess
    data_dir: Path

    def produced(self) -> list[int]:
        """The sequence numbers of every report this device made (the outbox's counter)."""
        counter = read_json(self.data_dir / "outbox" / COUNTER_NAME)
        return list(range(int(counter["next_seq"]) if counter else 0))

    def pending(self) -> int:
        return len(Outbox(self.data_dir / "outbox"))

    def committed(self) -> bool:
        return f"committed {VERSION}" in self.agent.text()


def device_id(n: int) -> str:
    return f"fault-{n}"


@contextmanager
def devices(
    backend: Backend,
    workdir: Path,
    own: Callable[[int], dict[str, Any]] = lambda n: {},
    **fields: Any,
) -> Iterator[list[Device]]:
    """DEVICES real agents on simulated boards, polling every second; `own(n)` gives device
    n's own config fields."""
    with ExitStack() as stack:
        running = []
        for n in range(DEVICES):
            sim = backend.provision(device_id(n))
            config = backend.agent_config(
                device_id(n),
                poll_interval_s=1.0,
                slot_backend="sim",
                slot_options={"root": str(sim.root)},
                health_checks=[PASSING],
                health_deadline_s=10.0,
                **{**fields, **own(n)},
            )
            config_file = workdir / f"{device_id(n)}.toml"
            config_file.write_text(toml_config(config))
            log = workdir / f"{device_id(n)}.log"
            agent = stack.enter_context(agent_process(agent_command(config_file), log))
            running.append(Device(device_id(n), agent, config.data_dir))
        yield running


def start_rollout(backend: Backend) -> str:
    release = backend.register(backend.sign(VERSION), percentage=0)
    body = {  # one wave, complete once every device finished: its counts are final
        "release_id": release.id,
        "waves": [100],
        "gates": {"min_success_rate": 1.0, "min_devices": DEVICES, "min_soak_s": 0},
    }
    return backend.admin.create_rollout(RolloutIn.model_validate(body)).rollout_id


def wait_for(check: Callable[[], bool], what: str) -> None:
    wait_until(check, what, WAIT_S, every_s=0.2)


def some_device_started(fleet: list[Device]) -> Callable[[], bool]:
    return lambda: any(f"update found: {VERSION}" in d.agent.text() for d in fleet)


def assert_nothing_lost_or_doubled(backend: Backend, fleet: list[Device], rollout: str) -> None:
    """Every device committed and has nothing left to send; the server holds each report
    each device produced exactly once; the rollout's counts are what the devices say."""
    wait_for(lambda: all(d.committed() for d in fleet), "every device committed")

    # The agent logs "committed" a moment before it numbers the commit's report (the counter
    # is written first): wait until the outbox is empty AND the server holds every number the
    # counter gave out, rather than reading both once in that window.
    def stored(device: Device) -> list[int]:
        return sorted(r.seq for r in backend.reports(device.device_id))

    def delivered(device: Device) -> bool:
        return device.pending() == 0 and stored(device) == device.produced()

    wait_for(lambda: all(delivered(d) for d in fleet), "every report acknowledged and stored")
    for device in fleet:
        assert stored(device) == device.produced(), device.device_id  # once each, none lost
    wait_for(lambda: status(backend, rollout).state == "completed", "the rollout completed")
    numbers = status(backend, rollout).numbers
    assert numbers is not None
    said = sum(d.committed() for d in fleet)
    assert (numbers.success, numbers.failed, numbers.rolled_back) == (said, 0, 0)
    assert numbers.in_progress == 0


def status(backend: Backend, rollout: str) -> RolloutStatus:
    return backend.admin.rollout(rollout)


def persistent_broker(workdir: Path) -> tuple[str, Path, int]:
    """mosquitto's binary, a persistent configuration on a free port, and that port."""
    binary = mosquitto_binary()
    if binary is None:
        require_tools("mosquitto")  # fails with CI=true, skips otherwise
    assert binary is not None
    port = free_port()
    return binary, persistent_mosquitto_conf(workdir, port), port


def test_a_mosquitto_killed_and_restarted_mid_rollout_loses_nothing(tmp_path: Path) -> None:
    binary, conf, port = persistent_broker(tmp_path)
    url = f"mqtt://127.0.0.1:{port}"
    with ExitStack() as stack:
        broker = stack.enter_context(mosquitto(binary, conf, port, tmp_path / "mosq.log"))
        backend = stack.enter_context(
            running_backend(tmp_path / "lab", BOARD, broker_url=url, rollout_tick_s=float(TICK_S))
        )
        fleet = stack.enter_context(devices(backend, tmp_path, broker_url=url))
        rollout = start_rollout(backend)
        wait_for(some_device_started(fleet), "a device started the update")
        broker.kill()
        broker.wait()
        time.sleep(2)  # devices and server notice, reconnect, and are refused a while
        stack.enter_context(mosquitto(binary, conf, port, tmp_path / "mosq-again.log"))
        assert_nothing_lost_or_doubled(backend, fleet, rollout)


def test_devices_off_the_network_for_a_while_lose_nothing(tmp_path: Path) -> None:
    """Half the fleet reaches the server and the broker through links that go down in the
    middle of the image download, for longer than the agent's read time-outs: the download
    and MQTT stall in silence, new connections go nowhere; then every connection through the
    links is cut (as a carrier drops dead flows) and the network returns."""
    binary, conf, port = persistent_broker(tmp_path)
    with ExitStack() as stack:
        stack.enter_context(mosquitto(binary, conf, port, tmp_path / "mosq.log"))
        backend = stack.enter_context(
            running_backend(
                tmp_path / "lab",
                BOARD,
                broker_url=f"mqtt://127.0.0.1:{port}",
                rollout_tick_s=float(TICK_S),
            )
        )
        server_port = int(backend.server_url.rsplit(":", 1)[1].split("/")[0])
        links: dict[int, tuple[FlakyLink, FlakyLink]] = {
            n: (
                stack.enter_context(flaky_link(server_port)),
                stack.enter_context(flaky_link(port)),
            )
            for n in range(DEVICES // 2)
        }

        def through_links(n: int) -> dict[str, Any]:
            if n not in links:
                return {}
            http, mqtt = links[n]
            return {
                "server_url": f"http://127.0.0.1:{http.port}",
                "broker_url": f"mqtt://127.0.0.1:{mqtt.port}",
            }

        fleet = stack.enter_context(
            devices(backend, tmp_path, through_links, broker_url=f"mqtt://127.0.0.1:{port}")
        )
        for device in fleet:
            device.agent.wait_for("connected", timeout=WAIT_S)
        for http, mqtt in links.values():  # a quarter of the image in, both links go down
            http.down_after(BOARD.image_size // 4, mqtt)
        rollout = start_rollout(backend)
        cut_off = [fleet[n] for n in links]
        wait_for(lambda: not any(http.is_up for http, _ in links.values()), "links down")
        time.sleep(OFFLINE_S)
        assert not any(d.committed() for d in cut_off)  # they were stuck mid-download
        for pair in links.values():
            for link in pair:
                link.cut()
                link.up()
        assert_nothing_lost_or_doubled(backend, fleet, rollout)
        for http, mqtt in links.values():  # they came back over new connections
            assert http.connections > 1
            wait_for(lambda m=mqtt: m.connections > 1, "the MQTT client reconnected")


def test_a_nats_node_killed_mid_rollout_loses_nothing(tmp_path: Path) -> None:
    require_tools("nats-server")
    binary = nats_binary()
    assert binary is not None
    with ExitStack() as stack:
        cluster = stack.enter_context(nats_cluster(binary, tmp_path / "nats"))
        urls = cluster.mqtt_urls
        starts = Counter(first_broker(device_id(n), len(urls)) for n in range(DEVICES))
        doomed = starts.most_common(1)[0][0]  # the node most devices start on
        server_node = urls[(doomed + 1) % len(urls)]
        backend = stack.enter_context(
            running_backend(
                tmp_path / "lab", BOARD, broker_url=server_node, rollout_tick_s=float(TICK_S)
            )
        )
        fleet = stack.enter_context(devices(backend, tmp_path, broker_urls=tuple(urls)))
        for device in fleet:
            device.agent.wait_for("connected", timeout=WAIT_S)  # on its node, before the fault
        rollout = start_rollout(backend)
        wait_for(some_device_started(fleet), "a device started the update")
        cluster.kill(doomed)
        assert_nothing_lost_or_doubled(backend, fleet, rollout)
        moved = [d for d in fleet if first_broker(d.device_id, len(urls)) == doomed]
        assert all("trying broker" in d.agent.text() for d in moved)  # to another node
        cluster.restart(doomed)


@contextmanager
def replicated_backend(pg_url: str, workdir: Path) -> Iterator[tuple[Backend, ServerReplicas]]:
    """Two replicas on PostgreSQL behind HAProxy, serving the lab's repository."""
    require_tools("haproxy")
    binary = haproxy_binary()
    assert binary is not None
    lab = workdir / "lab"
    init_keys(lab / "repo")
    env = {
        "OTA_ADMIN_TOKEN": ADMIN_TOKEN,
        "OTA_ENROLLMENT_TOKEN": ENROLLMENT_TOKEN,
        "OTA_REPO_DIR": str(lab / "repo" / "repository"),
        "OTA_ROLLOUT_TICK_S": TICK_S,
        **{f"OTA_RATE_{name.upper()}": "100000/minute" for name in asdict(RateLimitConfig())},
    }
    with server_replicas(binary, pg_url, workdir / "replicas", env=env) as replicas:
        backend = Backend(lab, replicas.url, BOARD)
        try:
            yield backend, replicas
        finally:
            backend.close()


def leader(replicas: ServerReplicas) -> int:
    def leads(index: int) -> bool:
        workers = replicas.health(index)["workers"]
        assert isinstance(workers, list)
        return any(w["name"] == "rollout-scheduler" and w["leading"] for w in workers)

    wait_for(lambda: leads(0) or leads(1), "a replica leads")
    return 0 if leads(0) else 1


@dataclass
class Replicated:
    backend: Backend
    replicas: ServerReplicas
    fleet: list[Device]
    rollout: str


@contextmanager
def replicated_rollout(pg_url: str, workdir: Path) -> Iterator[Replicated]:
    """Devices on replicated servers, a rollout started and a device already in it."""
    with (
        replicated_backend(pg_url, workdir) as (backend, replicas),
        devices(backend, workdir) as fleet,
    ):
        rollout = start_rollout(backend)
        wait_for(some_device_started(fleet), "a device started the update")
        yield Replicated(backend, replicas, fleet, rollout)


@pytest.mark.postgres
def test_a_server_replica_killed_mid_ingestion_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    with replicated_rollout(pg_url, tmp_path) as lab:
        backend, replicas, fleet, rollout = lab.backend, lab.replicas, lab.fleet, lab.rollout
        killed = leader(replicas)  # the one running the rollout, and serving half the reports
        replicas.kill(killed)
        time.sleep(1)
        replicas.start(killed)
        assert_nothing_lost_or_doubled(backend, fleet, rollout)


@pytest.mark.postgres
def test_servers_restarted_mid_rollout_resume_it_where_it_was(pg_url: str, tmp_path: Path) -> None:
    with replicated_rollout(pg_url, tmp_path) as lab:
        backend, replicas, fleet, rollout = lab.backend, lab.replicas, lab.fleet, lab.rollout
        replicas.kill(0)
        replicas.kill(1)  # no server at all, mid-rollout
        time.sleep(1)
        replicas.start(0, 1)
        after = status(backend, rollout)
        assert after.state in ("active", "completed")  # not started over, not lost
        assert after.percentage == 100
        assert_nothing_lost_or_doubled(backend, fleet, rollout)
        audit = [a.action for a in status(backend, rollout).audit]
        assert audit.count("create") == 1
        assert audit[-1] == "complete"
