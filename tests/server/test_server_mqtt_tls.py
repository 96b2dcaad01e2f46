"""The server's bridge against the production-shaped broker: mosquitto with TLS, logins and
the ACL that server.mosquitto writes. The server user publishes notices and commands and reads
every device's status; a device logs in as itself and hears its own channel's notice."""

from __future__ import annotations

import getpass
import queue
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lab.net import free_port
from lab.processes import live_server, mosquitto, mosquitto_binary
from server.api_client import OtaApi
from server.api_models import Report
from server.mosquitto import BrokerDevice, write_broker_config
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK, new_id, sample_release, sample_report
from wire import ENROLL_PATH, AvailabilityNotice, channel_topic, device_status_topic

pytestmark = [pytest.mark.mosquitto, pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)]

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
WAIT_S = 10.0


@dataclass
class TlsBroker:
    url: str  # for the server: mqtts://ota-server:<password>@127.0.0.1:<port>
    port: int
    ca: Path
    device: BrokerDevice


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto binary not found")
    out = tmp_path_factory.mktemp("tls-broker")
    device = BrokerDevice(new_id("phone"), "stable", "sim", uuid.uuid4().hex)
    port, server_password = free_port(), uuid.uuid4().hex
    paths = write_broker_config(
        out / "conf",
        [device],
        port=port,
        server_password=server_password,
        run_as_user=getpass.getuser(),  # as root, mosquitto would drop to a user without access
    )
    with mosquitto(binary, paths.conf, port, out / "mosquitto.log"):
        url = f"mqtts://ota-server:{server_password}@127.0.0.1:{port}"
        yield TlsBroker(url, port, paths.ca_cert, device)


def device_client(broker: TlsBroker, topic: str) -> tuple[mqtt.Client, queue.Queue[bytes]]:
    heard: queue.Queue[bytes] = queue.Queue()
    device = broker.device
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device.device_id)
    client.username_pw_set(device.device_id, device.password)
    client.tls_set(ca_certs=str(broker.ca))
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, msg: heard.put(bytes(msg.payload))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client, heard


def test_the_server_speaks_tls_and_its_acl(tls_broker: TlsBroker, tmp_path: Path) -> None:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'ota.db'}",
        broker_url=tls_broker.url,
        broker_ca=tls_broker.ca,
        admin_token=ADMIN,
        enrollment_token=ENROLL,
    )
    phone = tls_broker.device.device_id
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as http:
        body = {"enrollment_token": ENROLL, "device_id": phone, "model": "sim", "channel": "stable"}
        assert http.post(ENROLL_PATH, json=body).status_code == 200
        release = sample_release("2026.47", 1, "stable", "sim")
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert http.post("/api/v1/releases", json=release, headers=admin).status_code == 201
        client, heard = device_client(tls_broker, channel_topic("stable", "sim"))
        try:
            notice = AvailabilityNotice.from_json(heard.get(timeout=WAIT_S))
            report = sample_report(phone, 0).to_json()
            client.publish(device_status_topic(phone), report, qos=1).wait_for_publish(WAIT_S)
        finally:
            client.disconnect()
            client.loop_stop()
        assert notice.release_version == "2026.47"
        deadline = time.monotonic() + WAIT_S
        while not (held := reports(url, phone)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [(r.seq, r.via) for r in held] == [(0, "mqtt")]


def reports(url: str, device_id: str) -> list[Report]:
    with OtaApi(url, ADMIN) as admin:
        return admin.reports(device_id)
