"""The doorbell against a broker that refuses a subscription for a while, as a NATS cluster
does while it elects the leader of a session's stream: it asks again until granted, and
then wakes the runner as a connect does, because what was sent meanwhile never reached it.

The broker here is a few lines of MQTT 3.1.1 (CONNECT/CONNACK, SUBSCRIBE/SUBACK with 0x80
for a refusal, PINGREQ/PINGRESP, DISCONNECT) over real loopback TCP, written from the
specification: no broker we can install refuses a subscription on demand."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from conftest import wait_until

import agent.doorbell
from agent.doorbell import Doorbell
from wire import channel_topic, device_cmd_topic

WAIT_S = 10.0
REFUSED = 0x80


class RefusingBroker(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, refusals: int) -> None:
        super().__init__(("127.0.0.1", 0), _Session)
        self.refusals = refusals  # how many SUBSCRIBEs have their first topic refused
        self.subscribes: list[list[str]] = []
        self.lock = threading.Lock()

    def answer(self, topics: list[str]) -> list[int]:
        with self.lock:
            self.subscribes.append(topics)
            refuse = self.refusals > 0
            self.refusals -= 1
        return [REFUSED if refuse and i == 0 else 1 for i in range(len(topics))]


class _Session(socketserver.BaseRequestHandler):
    server: RefusingBroker

    def handle(self) -> None:
        conn = self.request
        while True:
            header = conn.recv(1)
            if not header:
                return
            body = _read(conn, _remaining_length(conn))
            kind = header[0] >> 4
            if kind == 1:  # CONNECT
                conn.sendall(bytes([0x20, 2, 0, 0]))
            elif kind == 8:  # SUBSCRIBE: packet id, then (length, topic, qos)...
                packet_id, topics, at = body[:2], [], 2
                while at < len(body):
                    (size,) = struct.unpack(">H", body[at : at + 2])
                    topics.append(body[at + 2 : at + 2 + size].decode())
                    at += 2 + size + 1
                codes = self.server.answer(topics)
                conn.sendall(bytes([0x90, 2 + len(codes)]) + packet_id + bytes(codes))
            elif kind == 12:  # PINGREQ
                conn.sendall(bytes([0xD0, 0]))
            elif kind == 14:  # DISCONNECT
                return


def _remaining_length(conn: socket.socket) -> int:
    value, shift = 0, 0
    while True:
        byte = _read(conn, 1)[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


@contextmanager
def refusing_broker(refusals: int) -> Iterator[RefusingBroker]:
    broker = RefusingBroker(refusals)
    thread = threading.Thread(target=broker.serve_forever, daemon=True)
    thread.start()
    try:
        yield broker
    finally:
        broker.shutdown()
        broker.server_close()
        thread.join(timeout=WAIT_S)


@contextmanager
def ringing(broker: RefusingBroker) -> Iterator[tuple[Doorbell, list[float]]]:
    """A doorbell on `broker`, and the times it woke the runner."""
    wakes: list[float] = []
    doorbell = Doorbell(
        f"mqtt://127.0.0.1:{broker.server_address[1]}",
        device_id="dev-1",
        channel="stable",
        model="sim",
        on_message=lambda topic, payload: None,
        on_connected=lambda: wakes.append(time.monotonic()),
    )
    doorbell.start()
    try:
        yield doorbell, wakes
    finally:
        doorbell.stop()


def wait(check: Callable[[], bool], what: str) -> None:
    wait_until(check, what, WAIT_S, every_s=0.02)


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent.doorbell, "SUBSCRIBE_RETRY_S", 0.1)


CHANNEL, COMMANDS = channel_topic("stable", "sim"), device_cmd_topic("dev-1")


def test_a_refused_subscription_is_asked_for_again_and_its_grant_wakes_the_runner() -> None:
    with refusing_broker(refusals=2) as broker, ringing(broker) as (doorbell, wakes):
        wait(lambda: len(wakes) == 2, "a second wake")
        assert doorbell.subscribed
        # on connect both; then the refused one alone, refused again; then granted
        assert broker.subscribes == [[CHANNEL, COMMANDS], [CHANNEL], [CHANNEL]]
        time.sleep(0.3)  # several retry periods: nothing more is asked, nobody woken
        assert len(broker.subscribes) == 3
        assert len(wakes) == 2


def test_a_subscription_refused_for_good_is_asked_for_on_and_wakes_nobody() -> None:
    with refusing_broker(refusals=10**6) as broker, ringing(broker) as (doorbell, wakes):
        wait(lambda: len(broker.subscribes) >= 4, "a fourth SUBSCRIBE")
        assert doorbell.connected
        assert not doorbell.subscribed
        assert broker.subscribes[1:4] == [[CHANNEL]] * 3
        assert len(wakes) == 1  # the connect's


def test_subscriptions_granted_at_once_wake_the_runner_once() -> None:
    with refusing_broker(refusals=0) as broker, ringing(broker) as (doorbell, wakes):
        wait(lambda: doorbell.subscribed, "the SUBSCRIBE granted")
        time.sleep(0.3)
        assert broker.subscribes == [[CHANNEL, COMMANDS]]
        assert len(wakes) == 1
