"""Both brokers we ship or configure enforce the same rules, tested the same way with a real
paho client: Mosquitto with the configuration generated from the device registry (one bad
row in it left out, the rest of the fleet served), and the embedded amqtt broker checking
logins against the same registry.

No anonymous clients; a device logs in with its own id and broker secret, publishes only its
own status, reads only its own commands and its channel's notice, and never publishes a
notice; the server's user may.
"""

from __future__ import annotations

import getpass
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from typer.testing import CliRunner

from agent.doorbell import Doorbell
from lab.net import free_port
from lab.processes import embedded_broker, live_server, mosquitto, mosquitto_binary
from server.cli import app as ota
from server.db import make_engine, make_sessions
from server.models import Device, utcnow
from server.mosquitto import BrokerDevice, hash_password, usable_devices
from server.settings import Settings
from server.testing import (
    MOSQUITTO_PIPE_LEAK,
    KeyedDevice,
    MqttPeer,
    enroll_keyed,
    new_id,
    only_the_allowed_arrives,
)
from wire import (
    STATUS_WILDCARD,
    channel_topic,
    device_client_id,
    device_cmd_topic,
    device_status_topic,
)

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing

ENROLL = "enroll-secret"
SERVER_USER = "ota-server"
SERVER_PASSWORD = "server-pw"
LEGACY_ID = "Legacy Phone"  # a row from before the device id rule
WAIT_S = 10.0
QUIET_S = 0.5


@dataclass
class FleetBroker:
    kind: str
    port: int
    a: KeyedDevice  # on stable
    b: KeyedDevice  # on preview
    ca: Path | None = None  # mosquitto speaks TLS (the generated CA), amqtt plain MQTT here


def _enrolled_fleet(db_url: str) -> tuple[KeyedDevice, KeyedDevice]:
    with (
        live_server(Settings(db_url=db_url, enrollment_token=ENROLL)) as url,
        httpx.Client(base_url=url, timeout=20) as client,
    ):
        a = enroll_keyed(client, new_id("dev-a"), ENROLL, "sim", "stable")
        b = enroll_keyed(client, new_id("dev-b"), ENROLL, "sim", "preview")
    engine = make_engine(db_url)
    with make_sessions(engine)() as session:  # an id the rule refuses today, stored long ago
        legacy = Device(device_id=LEGACY_ID, model="sim", channel="stable", enrolled_at=utcnow())
        legacy.broker_password_hash = hash_password("x")
        session.add(legacy)
        session.commit()
    engine.dispose()
    return a, b


@pytest.fixture(scope="module", params=["mosquitto", "embedded"])
def fleet_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetBroker]:
    work = tmp_path_factory.mktemp(request.param)
    db_url = f"sqlite:///{work / 'ota.db'}"
    a, b = _enrolled_fleet(db_url)
    if request.param == "embedded":
        with embedded_broker(db_url, password=SERVER_PASSWORD) as url:
            yield FleetBroker("embedded", int(url.rsplit(":", 1)[1]), a, b)
        return
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto binary not found")
    out, port = work / "broker", free_port()
    _generate_mosquitto_config(db_url, out, port)
    with mosquitto(binary, out / "mosquitto.conf", port, work / "mosquitto.log"):
        yield FleetBroker("mosquitto", port, a, b, ca=out / "ca.crt")


def _generate_mosquitto_config(db_url: str, out: Path, port: int) -> None:
    """`ota broker mosquitto-config` from the registry, as an operator runs it."""
    server_port = free_port()
    args = ["broker", "mosquitto-config", str(out), "--db-url", db_url, "--port", str(port),
            "--server-password-env", "OTA_TEST_BROKER_PW", "--server-port", str(server_port),
            "--run-as-user", getpass.getuser()]  # fmt: skip
    written = CliRunner().invoke(ota, args, env={"OTA_TEST_BROKER_PW": SERVER_PASSWORD})
    assert written.exit_code == 0, written.output
    assert "2 device logins" in written.output  # the legacy row is left out, the rest served
    assert LEGACY_ID in written.output
    assert LEGACY_ID not in (out / "passwd").read_text()
    # the server's listener: its own login only, its URL told without the password
    assert f"mqtt://ota-server:<$OTA_TEST_BROKER_PW>@127.0.0.1:{server_port}" in written.output
    assert SERVER_PASSWORD not in written.output
    assert [line.split(":")[0] for line in (out / "passwd-server").read_text().splitlines()] == [
        "ota-server"
    ]


# ---------------------------------------------------------------------- a real paho client


class Peers:
    """Real paho clients of one broker, closed after the test."""

    def __init__(self, broker: FleetBroker) -> None:
        self.broker = broker
        self.made: list[MqttPeer] = []

    def login(self, user: str | None, password: str, client_id: str = "") -> ReasonCode:
        self.made.append(MqttPeer(user, password, self.broker.ca, client_id))
        return self.made[-1].connect(self.broker.port)

    def connected(self, user: str, password: str, client_id: str = "") -> MqttPeer:
        reason = self.login(user, password, client_id)
        assert not reason.is_failure, reason
        return self.made[-1]

    def server(self) -> MqttPeer:
        return self.connected(SERVER_USER, SERVER_PASSWORD)

    def device(self, device: KeyedDevice) -> MqttPeer:
        client_id = device_client_id(device.device_id)
        return self.connected(device.device_id, device.broker_secret, client_id)


@pytest.fixture
def peer(fleet_broker: FleetBroker) -> Iterator[Peers]:
    peers = Peers(fleet_broker)
    yield peers
    for made in peers.made:
        made.close()


# ---------------------------------------------------------------------- the rules


def test_no_anonymous_client_and_no_wrong_password(fleet_broker: FleetBroker, peer: Peers) -> None:
    a, b = fleet_broker.a, fleet_broker.b
    refused: list[tuple[str | None, str]] = [
        (None, ""),  # anonymous
        (a.device_id, "wrong"),
        (a.device_id, b.broker_secret),  # another device's secret
        (SERVER_USER, "wrong"),
        (new_id("nobody"), "x"),
        (LEGACY_ID, "x"),
    ]
    for user, password in refused:
        assert peer.login(user, password).is_failure, (fleet_broker.kind, user)


def test_a_device_publishes_only_its_own_status(fleet_broker: FleetBroker, peer: Peers) -> None:
    a, b = fleet_broker.a, fleet_broker.b
    server = peer.server()
    server.subscribe(STATUS_WILDCARD)
    other, own = device_status_topic(b.device_id), device_status_topic(a.device_id)
    only_the_allowed_arrives(peer.device(a), server, (other,), own)


def test_a_device_cannot_publish_notices(fleet_broker: FleetBroker, peer: Peers) -> None:
    a = fleet_broker.a
    server = peer.server()
    notices = (channel_topic("stable", "sim"), channel_topic("preview", "sim"))
    server.subscribe(*notices, device_cmd_topic(a.device_id), STATUS_WILDCARD)
    blocked = (*notices, device_cmd_topic(a.device_id))
    only_the_allowed_arrives(peer.device(a), server, blocked, device_status_topic(a.device_id))


def test_a_device_reads_only_its_commands_and_its_channels_notice(
    fleet_broker: FleetBroker, peer: Peers
) -> None:
    a, b = fleet_broker.a, fleet_broker.b
    server = peer.server()  # the server's user publishes notices and commands
    own_notice, other_notice = channel_topic("stable", "sim"), channel_topic("preview", "sim")
    server.publish(other_notice, b"for preview", retain=True)
    server.publish(own_notice, b"for stable", retain=True)
    device = peer.device(a)
    device.subscribe(other_notice, own_notice, device_cmd_topic(b.device_id))
    assert device.next_message() == (own_notice, b"for stable")
    device.subscribe(device_cmd_topic(a.device_id))
    only_the_allowed_arrives(
        server, device, (device_cmd_topic(b.device_id), other_notice), device_cmd_topic(a.device_id)
    )


def test_the_agents_own_client_logs_in_with_its_broker_secret(
    fleet_broker: FleetBroker, peer: Peers
) -> None:
    a = fleet_broker.a
    server = peer.server()
    server.subscribe(STATUS_WILDCARD)
    heard: queue.Queue[tuple[str, bytes]] = queue.Queue()
    doorbell = Doorbell(
        f"{'mqtts' if fleet_broker.ca else 'mqtt'}://127.0.0.1:{fleet_broker.port}",
        device_id=a.device_id,
        channel="stable",
        model="sim",
        on_message=lambda topic, payload: heard.put((topic, payload)),
        on_connected=lambda: None,
        username=a.device_id,
        password=a.broker_secret,
        ca_file=str(fleet_broker.ca or ""),
    )
    doorbell.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not doorbell.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert doorbell.connected
        doorbell.publish_status(b"hello")
        assert server.next_message() == (device_status_topic(a.device_id), b"hello")
    finally:
        doorbell.stop()


def test_only_usable_rows_become_mosquitto_logins() -> None:
    good = BrokerDevice("dev-a", "stable", "sim", "pw")
    rows = [
        good,
        BrokerDevice(LEGACY_ID, "stable", "sim", "pw"),
        BrokerDevice(SERVER_USER, "stable", "sim", "pw"),
        BrokerDevice("dev-b", "st+able", "sim", "pw"),
        BrokerDevice("dev-c", "stable", "sim", "", password_hash="$7$1$!!$x"),
        BrokerDevice("dev-a", "beta", "sim", "pw"),
    ]
    usable, refused = usable_devices(rows, SERVER_USER)
    assert usable == [good]
    assert sorted(refused) == sorted([LEGACY_ID, SERVER_USER, "dev-b", "dev-c", "dev-a"])


def test_a_wildcard_subscription_reads_nothing_of_others(
    fleet_broker: FleetBroker, peer: Peers
) -> None:
    """Mosquitto grants the subscription and filters each message; amqtt refuses it: either
    way nothing of another device or channel reaches the device."""
    a, b = fleet_broker.a, fleet_broker.b
    server = peer.server()
    device = peer.device(a)
    device.subscribe("ota/v1/#")
    server.publish(device_cmd_topic(b.device_id), b"for b")
    server.publish(device_status_topic(b.device_id), b"from b")
    server.publish(channel_topic("preview", "sim"), b"for preview")
    time.sleep(QUIET_S)
    mine = {device_cmd_topic(a.device_id), channel_topic("stable", "sim")}
    while not device.messages.empty():
        topic, _ = device.messages.get_nowait()
        assert topic in mine, topic
