"""A real three-node NATS cluster (JetStream, MQTT): a retained QoS 1 notice the server
publishes on one node reaches a device on another, and a device whose node is killed moves
to another node and still hears notices."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tools, wait_until

import lab.natscluster
from agent.doorbell import Doorbell, first_broker
from lab.natscluster import NatsCluster, NatsNode, nats_binary, nats_cluster
from server.mqtt_bridge import MqttBridge
from wire import AvailabilityNotice, channel_topic

WAIT_S = 60.0
Heard = queue.Queue[tuple[str, bytes]]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    require_tools("nats-server")
    binary = nats_binary()
    assert binary is not None
    with nats_cluster(binary, tmp_path / "nats") as running:
        yield running


def notice(version: str) -> AvailabilityNotice:
    return AvailabilityNotice(
        release_version=version,
        target_path=f"sim-{version}.img",
        channel="stable",
        model="sim",
        rollout_id="r1",
        percentage=100.0,
    )


def doorbell(
    urls: list[str], device_id: str, heard: Heard, wakes: list[float] | None = None
) -> Doorbell:
    return Doorbell(
        urls,
        device_id=device_id,
        channel="stable",
        model="sim",
        on_message=lambda topic, payload: heard.put((topic, payload)),
        on_connected=lambda: None if wakes is None else wakes.append(time.monotonic()),
    )


def next_notice(heard: Heard, version: str) -> AvailabilityNotice:
    """The first notice heard for `version` (older ones, e.g. redelivered, are skipped)."""
    deadline = time.monotonic() + WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            topic, payload = heard.get(timeout=left)
        except queue.Empty:
            break
        if topic == channel_topic("stable", "sim"):
            got = AvailabilityNotice.from_json(payload)
            if got.release_version == version:
                return got
    raise AssertionError(f"no notice for {version} within {WAIT_S}s")


def server_on(url: str) -> MqttBridge:
    bridge = MqttBridge(url, lambda reports: [], client_id="ota-server")  # stores nothing
    assert bridge.start(WAIT_S), f"the server did not connect to {url}"
    return bridge


def device_first_on(index: int, count: int) -> str:
    """A device id that `first_broker` puts on node `index`."""
    return next(f"dev-{n}" for n in range(1000) if first_broker(f"dev-{n}", count) == index)


def test_a_node_whose_port_was_taken_before_it_bound_it_costs_a_restart_on_other_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tools("nats-server")
    binary = nats_binary()
    assert binary is not None
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    planned: list[list[NatsNode]] = []
    real_plan = lab.natscluster.plan_nodes

    def plan_with_a_taken_port(workdir: Path, size: int) -> list[NatsNode]:
        nodes = real_plan(workdir, size)
        if not planned:  # the first plan: node 2's client port is someone else's by now
            second = nodes[1]
            nodes[1] = NatsNode(
                second.name,
                taken.getsockname()[1],
                second.cluster_port,
                second.mqtt_port,
                second.monitor_port,
                workdir,
            )
        planned.append(nodes)
        return nodes

    monkeypatch.setattr(lab.natscluster, "plan_nodes", plan_with_a_taken_port)
    with taken, nats_cluster(binary, tmp_path / "nats") as running:
        assert len(planned) == 2
        assert running.nodes == planned[1]
        assert "address already in use" in (tmp_path / "nats" / "n2.log").read_text()
        assert all(proc.poll() is None for proc in running.procs.values())


def test_a_retained_notice_published_on_one_node_reaches_a_device_on_another(
    cluster: NatsCluster,
) -> None:
    server = server_on(cluster.mqtt_urls[0])
    try:
        server.publish_notice(notice("1.0.1"))  # returns once node 1 acknowledged it
    finally:
        server.stop()
    heard: Heard = queue.Queue()
    device = doorbell([cluster.mqtt_urls[2]], "dev-late", heard)  # connects afterwards
    device.start()
    try:
        assert next_notice(heard, "1.0.1").channel == "stable"
    finally:
        device.stop()


@pytest.mark.slow  # 4-45 s here: the cluster re-elects the leaders of MQTT's streams
def test_a_device_whose_node_dies_moves_to_another_and_still_hears_notices(
    cluster: NatsCluster,
) -> None:
    """What the device is promised is that no notice slips by: each is heard, or the doorbell
    wakes the runner after it was sent (and the runner asks the server over HTTP). NATS 2.9
    under load has resumed a session on another node and granted its subscription without
    the notice sent meanwhile, retained or queued: there the wake is what saves it."""
    urls = cluster.mqtt_urls
    device_id = device_first_on(1, len(urls))
    heard: Heard = queue.Queue()
    wakes: list[float] = []
    device = doorbell(urls, device_id, heard, wakes)
    server = server_on(urls[0])
    device.start()
    try:
        server.publish_notice(notice("1.0.1"))
        next_notice(heard, "1.0.1")
        cluster.kill(1)  # the device's node, by SIGKILL
        cluster.wait_ready([0, 2])  # the rest has elected new leaders for MQTT's streams
        sent = time.monotonic()  # the server stores a release before it sends its notice
        server.publish_notice(notice("1.0.2"))  # the device may still be moving
        wait_until(lambda: device.subscribed, "the device subscribed on another node", WAIT_S)
        assert device.broker != urls[1]
        if not any(wake > sent for wake in wakes):
            assert next_notice(heard, "1.0.2").release_version == "1.0.2"
        server.publish_notice(notice("1.0.3"))  # to a device subscribed on its new node
        assert next_notice(heard, "1.0.3").release_version == "1.0.3"
    finally:
        device.stop()
        server.stop()
