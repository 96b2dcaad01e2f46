"""The server's MQTT side against real brokers: a private mosquitto, and the embedded amqtt.

Notices are retained (a device that connects later still hears them), commands reach their
device's topic, and a report heard over MQTT is stored exactly once however often it comes.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lab.net import free_port, is_listening, wait_for_port
from lab.processes import embedded_broker, live_server, with_login
from server.api_client import OtaApi
from server.api_models import Device, Report
from server.broker import EmbeddedBroker
from server.broker_access import BrokerAccess
from server.mosquitto import hash_password
from server.mqtt_bridge import parse_broker_url
from server.settings import Settings
from server.testing import (
    MOSQUITTO_PIPE_LEAK,
    enroll_keyed,
    new_id,
    sample_release,
    sample_report,
)
from wire import (
    AvailabilityNotice,
    Command,
    ReportsAck,
    UpdateState,
    channel_topic,
    device_cmd_topic,
    device_status_topic,
    reports_path,
)

pytestmark = [pytest.mark.mosquitto, pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)]

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
WAIT_S = 10.0


class MqttClient:
    """A throw-away paho client: subscribes in on_connect, queues what it hears."""

    def __init__(self, broker_url: str, *topics: str) -> None:
        self._host, self._port, _, user, password = parse_broker_url(broker_url)
        self._topics = topics
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._subscribed: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=new_id("test"))
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.put(True)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        if self._topics:
            client.subscribe([(t, 1) for t in self._topics])
        else:
            self._subscribed.put(True)

    def __enter__(self) -> MqttClient:
        self.client.connect(self._host, self._port)
        self.client.loop_start()
        assert self._subscribed.get(timeout=WAIT_S)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def next(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=WAIT_S)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Server:
    def __init__(self, http: httpx.Client, admin: OtaApi, broker_url: str) -> None:
        self.http = http
        self.admin = admin
        self.broker_url = broker_url

    def enroll(self, device_id: str, channel: str = "stable", model: str = "sim") -> str:
        """Enroll with a key of the device's own; returns its access token."""
        return enroll_keyed(self.http, device_id, ENROLL, model, channel).token

    def reports(self, device_id: str) -> list[Report]:
        return self.admin.reports(device_id)

    def device(self, device_id: str) -> Device:
        return next(d for d in self.admin.devices() if d.device_id == device_id)


def server_settings(db_url: str, broker_url: str) -> Settings:
    return Settings(
        db_url=db_url,
        broker_url=broker_url,
        admin_token=ADMIN,
        enrollment_token=ENROLL,
        mqtt_client_id=new_id("ota-server"),
    )


@pytest.fixture(scope="module")
def server(shared_db_url: str, mosquitto_url: str) -> Iterator[Server]:
    with (
        live_server(server_settings(shared_db_url, mosquitto_url)) as url,
        httpx.Client(base_url=url, timeout=20) as http,
        OtaApi(url, ADMIN) as admin,
    ):
        yield Server(http, admin, mosquitto_url)


# ---------------------------------------------------------------------- notices and commands


def test_a_release_is_announced_retained_to_devices_that_connect_later(server: Server) -> None:
    channel, model = new_id("ch"), new_id("model")
    answer = server.http.post(
        "/api/v1/releases", json=sample_release("2026.47", 1, channel, model), headers=ADMIN_AUTH
    )
    assert answer.status_code == 201, answer.text
    with MqttClient(server.broker_url, channel_topic(channel, model)) as device:
        message = device.next()
    assert message.retain
    notice = AvailabilityNotice.from_json(message.payload)
    assert (notice.release_version, notice.rollout_id) == ("2026.47", answer.json()["rollout_id"])
    assert (notice.channel, notice.model, notice.percentage) == (channel, model, 100.0)


def test_pausing_a_rollout_updates_the_retained_notice(server: Server) -> None:
    channel = new_id("ch")
    body = sample_release("2026.47", 1, channel)
    rollout_id = server.http.post("/api/v1/releases", json=body, headers=ADMIN_AUTH).json()[
        "rollout_id"
    ]
    paused = server.http.post(
        f"/api/v1/rollouts/{rollout_id}", json={"paused": True}, headers=ADMIN_AUTH
    )
    assert paused.status_code == 200
    with MqttClient(server.broker_url, channel_topic(channel, "sim")) as device:
        notice = AvailabilityNotice.from_json(device.next().payload)
    assert (notice.rollout_id, notice.paused) == (rollout_id, True)


def test_a_command_is_published_to_its_device(server: Server) -> None:
    phone = new_id("phone")
    server.enroll(phone)
    with MqttClient(server.broker_url, device_cmd_topic(phone)) as device:
        sent = server.http.post(
            f"/api/v1/devices/{phone}/commands", json={"kind": "check_now"}, headers=ADMIN_AUTH
        )
        assert sent.status_code == 201
        command = Command.from_json(device.next().payload)
    assert (command.command_id, command.kind.value) == (sent.json()["command_id"], "check_now")


def test_current_notices_are_published_again_when_the_server_connects(
    server: Server, shared_db_url: str
) -> None:
    channel = new_id("ch")
    body = sample_release("2026.48", 1, channel)
    assert server.http.post("/api/v1/releases", json=body, headers=ADMIN_AUTH).status_code == 201
    with MqttClient(server.broker_url) as operator:
        operator.publish(channel_topic(channel, "sim"), b"", retain=True)  # the broker forgot
    with live_server(server_settings(shared_db_url, server.broker_url)):
        wait_until(lambda: _retained(server.broker_url, channel_topic(channel, "sim")), "notice")


def _retained(broker_url: str, topic: str) -> bool:
    with MqttClient(broker_url, topic) as device:
        try:
            return device.messages.get(timeout=0.5).payload != b""
        except queue.Empty:
            return False


# ---------------------------------------------------------------------- reports over MQTT


def test_a_report_over_mqtt_is_stored_once_however_often_it_comes(server: Server) -> None:
    phone = new_id("phone")
    credential = server.enroll(phone)
    first = sample_report(phone, 0).to_json()
    with MqttClient(server.broker_url) as device:
        device.publish(device_status_topic(phone), first)
        device.publish(device_status_topic(phone), first)
        committed = sample_report(phone, 1, UpdateState.COMMITTED)
        device.publish(device_status_topic(phone), committed.to_json())
    wait_until(lambda: len(server.reports(phone)) == 2, "both reports")
    time.sleep(0.3)  # a late duplicate would show up now
    assert sorted((r.seq, r.via) for r in server.reports(phone)) == [(0, "mqtt"), (1, "mqtt")]
    again = server.http.post(
        reports_path(phone),
        json=[sample_report(phone, 0).to_dict()],
        headers={"Authorization": f"Bearer {credential}"},
    )
    assert ReportsAck.from_json(again.content).acked == (0,)
    assert len(server.reports(phone)) == 2
    assert server.device(phone).state == "committed"


def test_reports_that_break_the_rules_are_dropped(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.mqtt_bridge")
    phone, ghost = new_id("phone"), new_id("ghost")
    server.enroll(phone)
    with MqttClient(server.broker_url) as device:
        device.publish(device_status_topic(ghost), sample_report(ghost, 0).to_json())
        device.publish(device_status_topic(phone), sample_report(ghost, 1).to_json())
        device.publish(device_status_topic(phone), b"{not json")
        device.publish(device_status_topic(phone), b'{"v": 1, "seq": 3}')
        device.publish(device_status_topic(phone), sample_report(phone, 9).to_json())
    wait_until(lambda: len(server.reports(phone)) == 1, "the valid report")
    assert [r.seq for r in server.reports(phone)] == [9]
    assert server.reports(ghost) == []
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped")]
    assert len(dropped) == 4, dropped
    assert any(f"no device {ghost!r}" in line for line in dropped)
    assert any(f"it names device {ghost!r}" in line for line in dropped)


# ---------------------------------------------------------------------- the embedded broker


def test_embedded_broker_round_trip_and_stop(tmp_path: Path) -> None:
    port = free_port()
    access = BrokerAccess(f"sqlite:///{tmp_path / 'ota.db'}", hash_password("pw"))
    with EmbeddedBroker("127.0.0.1", port, access) as broker:
        assert broker.url == f"mqtt://127.0.0.1:{port}"
        login = with_login(broker.url, access.server_user, "pw")
        with (
            MqttClient(login, "ota/v1/test/#") as listener,
            MqttClient(login) as talker,
        ):
            talker.publish("ota/v1/test/hello", b"world")
            message = listener.next()
        assert (message.topic, message.payload) == ("ota/v1/test/hello", b"world")
    assert not is_listening(port)  # nothing listens any more


def test_embedded_broker_reports_a_busy_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        access = BrokerAccess("sqlite://", hash_password("pw"))
        broker = EmbeddedBroker("127.0.0.1", taken.getsockname()[1], access)
        with pytest.raises(Exception, match="can't be started"):
            broker.start()
        broker.stop()


def test_the_server_works_with_the_embedded_broker(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'ota.db'}"
    with embedded_broker(db_url) as broker_url:
        settings = server_settings(db_url, broker_url)
        with (
            live_server(settings) as url,
            httpx.Client(base_url=url, timeout=20) as http,
            OtaApi(url, ADMIN) as admin,
        ):
            server = Server(http, admin, broker_url)
            phone = new_id("phone")
            server.enroll(phone)
            body = sample_release("2026.47", 1, "stable", "sim")
            assert http.post("/api/v1/releases", json=body, headers=ADMIN_AUTH).status_code == 201
            with MqttClient(broker_url, channel_topic("stable", "sim")) as device:
                notice = AvailabilityNotice.from_json(device.next().payload)
                device.publish(device_status_topic(phone), sample_report(phone, 0).to_json())
            assert notice.release_version == "2026.47"
            wait_until(lambda: len(server.reports(phone)) == 1, "the report over amqtt")


def test_ota_broker_run_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'ota.db'}"
    command = ["ota", "broker", "run", "--port", str(port), "--db-url", db_url]
    env = {**os.environ, "OTA_BROKER_PASSWORD": "pw"}
    ota = [sys.executable, "-c", "from server.cli import main; main()", *command[1:]]
    proc = subprocess.Popen(ota, stdout=subprocess.PIPE, text=True, env=env)
    try:
        wait_for_port(port)
        with MqttClient(f"mqtt://ota-server:pw@127.0.0.1:{port}", "ota/v1/t/#") as listener:
            listener.publish("ota/v1/t/1", b"ping")
            assert listener.next().payload == b"ping"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        banner = proc.stdout.read()
        proc.stdout.close()
    assert f"mqtt://127.0.0.1:{port}" in banner


def test_a_server_whose_broker_is_away_still_works_and_catches_up(tmp_path: Path) -> None:
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'ota.db'}"
    settings = replace(
        server_settings(db_url, f"mqtt://ota-server:pw@127.0.0.1:{port}"),
        mqtt_connect_wait_s=0.2,
    )
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as http:
        started = time.monotonic()
        body = sample_release("2026.47", 1, "stable", "sim")
        assert http.post("/api/v1/releases", json=body, headers=ADMIN_AUTH).status_code == 201
        assert time.monotonic() - started < 2.0  # nothing waits for a broker that is not there
        with embedded_broker(db_url, port, password="pw") as broker_url:  # the broker comes back
            wait_until(lambda: _retained(broker_url, channel_topic("stable", "sim")), "notice")
