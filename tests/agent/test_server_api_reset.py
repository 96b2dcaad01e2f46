"""A request sent on a kept-alive connection the server has just dropped (uvicorn closes idle
ones after 5 s) fails with "connection reset" though the server never handled it. The
agent sends such a request again, once, on a new connection, when doing it twice is
harmless (GETs, reports, command acks); the others fail as before and its loop decides.

The server here answers the first request of its first connection, then resets that connection
on the next request (SO_LINGER 0, the reset a closing server's socket gives): over real TCP,
deterministic, which uvicorn's idle timer is not."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from agent.errors import TransportError
from agent.server_api import ServerApi
from wire import PollAnswer, StatusReport, UpdateState

ANSWERS = {
    "GET": json.dumps(PollAnswer(notice=None).to_dict()).encode(),
    "POST": b'{"v": 1, "acked": [0]}',
}


class ResettingServer:
    """Each connection's requests are counted; the first connection is reset at its second
    request."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.requests: list[tuple[int, str]] = []  # (connection number, request line)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        number = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number += 1
            threading.Thread(target=self._talk, args=(conn, number), daemon=True).start()

    def _talk(self, conn: socket.socket, number: int) -> None:
        with conn, conn.makefile("rb") as reader:
            for index in range(100):
                line = reader.readline().decode().strip()
                if not line:
                    return
                length = 0
                while header := reader.readline().strip():
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                reader.read(length)
                self.requests.append((number, line))
                if number == 1 and index == 1:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return  # closed with a reset, the request unanswered
                body = ANSWERS[line.split()[0]]
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )

    def close(self) -> None:
        self.listener.close()


@contextmanager
def resetting_server() -> Iterator[ResettingServer]:
    server = ResettingServer()
    try:
        yield server
    finally:
        server.close()


def report() -> StatusReport:
    return StatusReport(device_id="dev-1", seq=0, state=UpdateState.IDLE, current_version="1.0")


def test_a_poll_on_a_connection_reset_under_it_is_sent_again_on_a_new_one() -> None:
    with resetting_server() as server:
        api = ServerApi(server.url, "dev-1", bearer="tester-token")
        api.poll()
        assert api.poll() == PollAnswer(notice=None)
        assert [n for n, _ in server.requests] == [1, 1, 2]


def test_reports_are_sent_again_too_the_server_stores_them_once_by_seq() -> None:
    with resetting_server() as server:
        api = ServerApi(server.url, "dev-1", bearer="tester-token")
        api.poll()
        assert api.send_reports([report()]) == {0}
        assert [n for n, line in server.requests if line.startswith("POST")] == [1, 2]


def test_a_request_that_must_not_run_twice_is_not_sent_again() -> None:
    with resetting_server() as server:
        api = ServerApi(server.url, "dev-1", bearer="tester-token")
        api.poll()
        with pytest.raises(TransportError, match=r"POST .*redeem"):
            api.redeem_fcode("F-CODE-1")
        assert len(server.requests) == 2  # the F-code went out once
