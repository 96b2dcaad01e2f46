"""A real three-node NATS cluster (JetStream, MQTT): a retained QoS 1 notice the server
publishes on one node reaches a device on another, and a device whose node is killed moves
to another node and still hears notices."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tools

from agent.doorbell import Doorbell, first_broker
from lab.natscluster import NatsCluster, nats_binary, nats_cluster
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


def doorbell(urls: list[str], device_id: str, heard: Heard) -> Doorbell:
    return Doorbell(
        urls,
        device_id=device_id,
        channel="stable",
        model="sim",
        on_message=lambda topic, payload: heard.put((topic, payload)),
        on_connected=lambda: None,
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
    urls = cluster.mqtt_urls
    device_id = device_first_on(1, len(urls))
    heard: Heard = queue.Queue()
    device = doorbell(urls, device_id, heard)
    server = server_on(urls[0])
    device.start()
    try:
        server.publish_notice(notice("1.0.1"))
        next_notice(heard, "1.0.1")
        cluster.kill(1)  # the device's node, by SIGKILL
        cluster.wait_ready([0, 2])  # the rest has elected new leaders for MQTT's streams
        server.publish_notice(notice("1.0.2"))
        assert next_notice(heard, "1.0.2").release_version == "1.0.2"
        assert device.connected
        assert device.broker != urls[1]
    finally:
        device.stop()
        server.stop()
