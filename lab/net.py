"""Loopback ports: one free port to listen on, and waiting until something listens."""

from __future__ import annotations

import socket
import threading
import time

LOOPBACK = "127.0.0.1"
_given: set[int] = set()  # every port free_port handed out in this process
_given_lock = threading.Lock()
_MAX_DRAWS = 64


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process was
    not given before. The kernel may hand the same free port to two binds in a row: a plan of
    a dozen ports for a cluster then gave one node the same port twice and it would not start.
    (After _MAX_DRAWS repeats in a row the memory is forgotten: the old ports are long free.)"""
    with _given_lock:
        for _ in range(_MAX_DRAWS):
            port = _bound_once()
            if port not in _given:
                break
        else:
            _given.clear()
        _given.add(port)
        return port


def _bound_once() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`; TimeoutError if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout}s")


def is_listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0
