"""Test data for the server's tests: throw-away databases, unique names, sample bodies.
Starting the server, a broker or a fleet is the lab's (lab/)."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session

from wire import (
    ENROLL_PATH,
    StatusReport,
    UpdateState,
    challenge_path,
    device_token_path,
    encode_b64,
    enroll_request,
    token_statement,
)


@contextmanager
def database_url(kind: str, tmp_dir: Path, pg_admin_url: Callable[[], str]) -> Iterator[str]:
    """A SQLite file in `tmp_dir`, or (kind "postgresql") a fresh PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir / 'ota.db'}"
        return
    with fresh_postgres_database(pg_admin_url()) as url:
        yield url


@contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy psycopg URL), dropped on exit."""
    import uuid

    import psycopg

    name = f"of_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_id(prefix: str) -> str:
    """A name no other test uses (devices, channels: tests share servers and brokers)."""
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sample_release(
    version: str, counter: int, channel: str = "stable", model: str = "sim"
) -> dict[str, Any]:
    """A body for POST /api/v1/releases, as the signing side sends it."""
    return {
        "version": version,
        "channel": channel,
        "model": model,
        "target_path": f"{model}/{channel}/{version}/rom.img",
        "length": 1024,
        "sha256": "ab" * 32,
        "notes": f"build {version}",
        "published_at": "2026-11-27T10:00:00Z",
        "release_counter": counter,
    }


def sample_report(
    device_id: str, seq: int, state: UpdateState = UpdateState.DOWNLOADING
) -> StatusReport:
    return StatusReport(
        device_id=device_id, seq=seq, state=state, current_version="2026.46", slot="a"
    )


# tests/conftest.py's mosquitto_url leaves the mosquitto process's stderr pipe open; the leak
# surfaces as an unraisable-exception warning at session teardown, after whichever test ran
# last. The server's test modules ignore exactly that one message until the fixture closes it.
MOSQUITTO_PIPE_LEAK = (
    r"ignore:Exception ignored in. <_io.FileIO name=\d+ mode='rb' closefd=True>"
    ":pytest.PytestUnraisableExceptionWarning"
)


# ---------------------------------------------------------------------- device keys
# What a device does to enroll and sign in, for tests that speak HTTP as a device (the agent's
# own client, agent.server_api, cannot be imported by the server's side).


@dataclass
class KeyedDevice:
    """A device as the server's tests play it: its own key, its access token, its broker
    secret (both from the enrollment answer, or from `sign_in`)."""

    device_id: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate, repr=False)
    token: str = field(default="", repr=False)
    broker_secret: str = field(default="", repr=False)

    @property
    def public_key(self) -> str:
        return encode_b64(self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, statement: bytes) -> str:
        return encode_b64(self.key.sign(statement))

    def enroll_body(
        self,
        nonce: str,
        enrollment_token: str,
        model: str = "sim",
        channel: str = "stable",
        previous: KeyedDevice | None = None,
    ) -> dict[str, str]:
        """A signed enrollment request over `nonce`; `previous` signs it too (a new key)."""
        return enroll_request(
            enrollment_token=enrollment_token,
            nonce=nonce,
            device_id=self.device_id,
            model=model,
            channel=channel,
            public_key=self.public_key,
            sign=self.sign,
            previous_sign=None if previous is None else previous.sign,
        )

    def token_body(self, nonce: str) -> dict[str, str]:
        return {
            "nonce": nonce,
            "signature": self.sign(token_statement(nonce=nonce, device_id=self.device_id)),
        }


def challenge(client: httpx.Client, device_id: str) -> str:
    answer = client.get(challenge_path(device_id))
    answer.raise_for_status()
    return str(answer.json()["nonce"])


def try_enroll(
    client: httpx.Client,
    device: KeyedDevice,
    enrollment_token: str,
    model: str = "sim",
    channel: str = "stable",
    previous: KeyedDevice | None = None,
) -> httpx.Response:
    """POST a signed enrollment for `device`; on success its token and secret are kept."""
    nonce = challenge(client, device.device_id)
    body = device.enroll_body(nonce, enrollment_token, model, channel, previous)
    answer = client.post(ENROLL_PATH, json=body)
    if answer.status_code == 200:
        device.token = answer.json()["token"]
        device.broker_secret = answer.json()["broker_secret"]
    return answer


def enroll_keyed(
    client: httpx.Client,
    device_id: str,
    enrollment_token: str,
    model: str = "sim",
    channel: str = "stable",
) -> KeyedDevice:
    """A new key for `device_id`, enrolled (the answer must be a 200)."""
    device = KeyedDevice(device_id)
    answer = try_enroll(client, device, enrollment_token, model, channel)
    assert answer.status_code == 200, answer.text  # noqa: S101 - a test helper's precondition
    return device


def sign_in(client: httpx.Client, device: KeyedDevice) -> httpx.Response:
    """Trade a fresh challenge, signed with the device's key, for an access token."""
    nonce = challenge(client, device.device_id)
    answer = client.post(device_token_path(device.device_id), json=device.token_body(nonce))
    if answer.status_code == 200:
        device.token = answer.json()["token"]
    return answer


def enroll_in_session(
    session: Session, device_id: str, model: str, channel: str, fleet_token: str
) -> KeyedDevice:
    """Enroll straight through the service (no HTTP), as the server's own tests of its
    database do."""
    from server.schemas import EnrollRequest
    from server.services.device_keys import issue_challenge
    from server.services.enrollment import EnrollmentPolicy, enroll_device

    device = KeyedDevice(device_id)
    nonce = issue_challenge(session, device_id, 60.0).nonce
    request = EnrollRequest(**device.enroll_body(nonce, fleet_token, model, channel))
    enrolled = enroll_device(session, request, EnrollmentPolicy(fleet_token, 3600.0))
    device.token, device.broker_secret = enrolled.token, enrolled.broker_secret
    return device


# ---------------------------------------------------------------------- a real MQTT client

MQTT_WAIT_S = 15.0  # positive waits only: they return as soon as the packet arrives
MQTT_QUIET_S = 0.3  # how long "nothing else arrived" is watched after a later message did


class MqttPeer:
    """One paho client in its own loop thread; what it hears lands in queues."""

    def __init__(
        self,
        username: str | None,
        password: str | None,
        ca: Path | None = None,
        client_id: str = "",
    ) -> None:
        client_id = client_id or f"test-{uuid.uuid4().hex[:10]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.disconnected = queue.Queue[Any]()
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connacks.put(rc)
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.subacks.put(rcs)
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnected.put(rc)

    def connect(self, port: int) -> ReasonCode:
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        return self.connacks.get(timeout=MQTT_WAIT_S)

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        self.client.subscribe([(topic, 1) for topic in topics])
        return self.subacks.get(timeout=MQTT_WAIT_S)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(MQTT_WAIT_S)

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=MQTT_WAIT_S)

    def assert_quiet(self) -> None:
        time.sleep(MQTT_QUIET_S)
        if not self.messages.empty():
            raise AssertionError(f"heard what it must not: {self.messages.get_nowait()}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def only_the_allowed_arrives(
    sender: MqttPeer, receiver: MqttPeer, blocked: tuple[str, ...], allowed: str
) -> None:
    """Publish to every blocked topic, then to `allowed`: the broker keeps one client's
    messages in order, so when `allowed` has arrived and nothing follows, none was let through."""
    for topic in blocked:
        sender.publish(topic, b"must not arrive")  # acked by the broker, then dropped
    payload = uuid.uuid4().bytes
    sender.publish(allowed, payload)
    heard = receiver.next_message()
    if heard != (allowed, payload):
        raise AssertionError(f"heard {heard} instead of {allowed}")
    receiver.assert_quiet()


@contextmanager
def dashboard_client(base_url: str, token: str) -> Iterator[Any]:
    """An httpx.Client signed in to the dashboard with `token` (the form, then the cookie);
    the sign-in's answer is in `.signin_status`."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=20) as client:
        answer = client.post("/signin", data={"token": token, "next": "/"})
        client.signin_status = answer.status_code  # type: ignore[attr-defined]
        yield client
