"""An HTTP/1.1 peer that resets a kept-alive connection under the next request, as a server
closing an idle connection just as the client reuses it does (uvicorn drops idle ones after
5 s; the race is rare, this makes it certain). Its first connection's first request is
answered, its second is met with a reset (SO_LINGER 0), unanswered; every other request is
answered with `answers[method]` (JSON). Raw sockets, loopback only."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from lab.net import LOOPBACK

MAX_REQUESTS_PER_CONNECTION = 100


class ResettingServer:
    """Each connection's requests are counted; the first connection is reset at its second
    request."""

    def __init__(self, answers: Mapping[str, bytes]) -> None:
        self.answers = dict(answers)
        self.listener = socket.create_server((LOOPBACK, 0))
        self.requests: list[tuple[int, str]] = []  # (connection number, request line)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.listener.getsockname()[1]}"

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
            for index in range(MAX_REQUESTS_PER_CONNECTION):
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
                body = self.answers[line.split()[0]]
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )

    def close(self) -> None:
        self.listener.close()


@contextmanager
def resetting_server(answers: Mapping[str, bytes]) -> Iterator[ResettingServer]:
    server = ResettingServer(answers)
    try:
        yield server
    finally:
        server.close()
