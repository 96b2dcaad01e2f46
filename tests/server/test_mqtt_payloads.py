"""Hostile MQTT payloads against the bridge, through a real mosquitto and a live server:
malformed, oversized, of an unknown version, out of bounds, or naming another device than the
topic's. Each is refused and counted (the bridge's `refused` on GET /health), nothing stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from lab.processes import live_server
from server.mqtt_bridge import MAX_STATUS_BYTES, parse_broker_url
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK, new_id, sample_report
from wire import ENROLL_PATH, device_status_topic

pytestmark = [pytest.mark.mosquitto, pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)]

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
PHONE = "phone-under-attack"
WAIT_S = 10.0


class Stage:
    """The live server, its broker and one enrolled device, shared by every example."""

    def __init__(self, http: httpx.Client, broker_url: str) -> None:
        self.http = http
        host, port, *_ = parse_broker_url(broker_url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=new_id("attacker"))
        self.client.connect(host, port)
        self.client.loop_start()

    def refused(self) -> int:
        workers = self.http.get("/health").json()["workers"]
        return int(next(w for w in workers if w["name"] == "mqtt-bridge")["refused"])

    def stored(self) -> list[Any]:
        answer = self.http.get(
            "/api/v1/reports",
            params={"device_id": PHONE},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        return list(answer.json())

    def publish(self, payload: bytes) -> None:
        info = self.client.publish(device_status_topic(PHONE), payload, qos=1)
        info.wait_for_publish(WAIT_S)


@pytest.fixture(scope="module")
def stage(mosquitto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    db = tmp_path_factory.mktemp("db") / "ota.db"
    settings = Settings(
        db_url=f"sqlite:///{db}",
        broker_url=mosquitto_url,
        admin_token=ADMIN,
        enrollment_token=ENROLL,
        mqtt_client_id=new_id("ota-server"),
    )
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as http:
        body = {"enrollment_token": ENROLL, "device_id": PHONE, "model": "sim"}
        assert http.post(ENROLL_PATH, json={**body, "channel": "stable"}).status_code == 200
        stage = Stage(http, mosquitto_url)
        try:
            yield stage
        finally:
            stage.client.disconnect()
            stage.client.loop_stop()


def _report(**change: Any) -> bytes:
    return json.dumps({**sample_report(PHONE, 1).to_dict(), **change}).encode()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
HOSTILE = st.one_of(
    st.binary(max_size=300),  # malformed, mostly not even JSON
    _JSON.map(lambda value: json.dumps(value).encode()),  # JSON, not a report
    st.one_of(st.integers(), st.text(max_size=5), st.none())
    .filter(lambda v: v != 1)
    .map(lambda version: _report(v=version)),
    st.just(_report(detail={"pad": "x" * MAX_STATUS_BYTES})),  # oversized
    st.text(min_size=1, max_size=20)
    .filter(lambda d: d != PHONE)
    .map(lambda other: _report(device_id=other)),  # another device's report on this device's topic
    st.sampled_from(
        [
            _report(seq=2**63),
            _report(seq=-1),
            _report(state="exploded"),
            _report(at=float("nan")),
            _report(detail={"deep": json.loads('{"a":' * 20 + "1" + "}" * 20)}),
            _report(current_version="2026\u0000"),
        ]
    ),
)


def _wait_for_refusals(stage: Stage, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while stage.refused() < count:
        assert time.monotonic() < deadline, "the bridge did not refuse the message"
        time.sleep(0.02)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(payload=HOSTILE)
def test_hostile_payloads_are_refused_counted_and_never_stored(
    stage: Stage, payload: bytes
) -> None:
    before = stage.refused()
    stage.publish(payload)
    _wait_for_refusals(stage, before + 1)
    assert stage.refused() == before + 1
    assert stage.stored() == []


def test_a_good_report_still_goes_through(stage: Stage) -> None:
    stage.publish(sample_report(PHONE, 5).to_json())
    deadline = time.monotonic() + WAIT_S
    while not stage.stored():
        assert time.monotonic() < deadline, "the valid report was not stored"
        time.sleep(0.05)
    assert [r["seq"] for r in stage.stored()] == [5]
