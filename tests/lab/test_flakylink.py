"""The lab's link that goes down: while down nothing crosses in either direction and open
connections stall rather than fail; up resumes them; cut ends them on both sides."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from lab.flakylink import FlakyLink, flaky_link
from lab.net import LOOPBACK

QUIET_S = 0.5


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server((LOOPBACK, 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def link(echo_port: int) -> Iterator[FlakyLink]:
    with flaky_link(echo_port) as made:
        yield made


def connect(link: FlakyLink) -> socket.socket:
    return socket.create_connection((LOOPBACK, link.port), timeout=5)


def silent(conn: socket.socket) -> bool:
    conn.settimeout(QUIET_S)
    try:
        conn.recv(4096)
    except TimeoutError:
        return True
    finally:
        conn.settimeout(5)
    return False


def held_until_up(link: FlakyLink, conn: socket.socket, payload: bytes) -> None:
    """`payload` sent over the down link gets no answer until the link is up again."""
    conn.sendall(payload)
    assert silent(conn)  # no error, no answer: silence
    link.up()
    assert conn.recv(4096) == payload


def test_an_up_link_forwards_both_ways(link: FlakyLink) -> None:
    with connect(link) as conn:
        conn.sendall(b"hello")
        assert conn.recv(4096) == b"hello"


def test_a_down_link_stalls_an_open_connection_until_it_is_up(link: FlakyLink) -> None:
    with connect(link) as conn:
        conn.sendall(b"first")
        assert conn.recv(4096) == b"first"
        link.down()
        held_until_up(link, conn, b"held")


def test_a_new_connection_over_a_down_link_goes_nowhere_until_up(link: FlakyLink) -> None:
    link.down()
    with connect(link) as conn:  # accepted (the device cannot tell), then silence
        held_until_up(link, conn, b"anyone?")


def test_cut_ends_every_connection_and_later_ones_work(link: FlakyLink) -> None:
    with connect(link) as conn:
        conn.sendall(b"x")
        assert conn.recv(4096) == b"x"
        link.down()
        link.cut()
        link.up()
        try:
            ended = conn.recv(4096) == b""
        except ConnectionResetError:
            ended = True
        assert ended
    assert link.open_connections() == 0
    with connect(link) as again:
        again.sendall(b"back")
        assert again.recv(4096) == b"back"
    assert link.connections == 2


def test_down_after_takes_the_link_and_its_partners_down_mid_stream(echo_port: int) -> None:
    with flaky_link(echo_port) as link, flaky_link(echo_port) as partner, connect(link) as conn:
        link.down_after(6, partner)  # each echo crosses twice: down within the second echo
        conn.sendall(b"abc")
        assert conn.recv(4096) == b"abc"  # 6 bytes crossed: down from now on
        assert not link.is_up
        assert not partner.is_up
        held_until_up(link, conn, b"held")
