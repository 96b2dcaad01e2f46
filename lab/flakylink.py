"""A network link that the lab can take down: a TCP forwarder in user space between a device
and one server or broker port.

While the link is down nothing crosses it in either direction: connections that are open
stall (what a device sees when its radio loses the network: no error, just silence until its
own time-outs fire), and new connections are accepted but go nowhere. `cut` then ends every
connection through the link, as a NAT or a carrier drops the dead flows; `up` lets traffic
through again, resuming the stalled connections that survived.

This stands in for `tc netem` in a network namespace, which needs the kernel's `sch_netem`
(not in this machine's kernel: "Specified qdisc kind is unknown"); a forwarder needs nothing
but sockets, so the fault tests run the same on any CI machine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from lab.net import LOOPBACK

CONNECT_TIMEOUT_S = 5.0
CHUNK = 64 * 1024


class FlakyLink:
    """Listens on `port` (loopback) and forwards each connection to `target_port`."""

    def __init__(self, target_port: int, target_host: str = LOOPBACK) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.connections = 0  # accepted so far: a test can see that a device came back
        self._trip: tuple[int, tuple[FlakyLink, ...]] | None = None  # at `forwarded`, take these
        self.forwarded = 0  # bytes, both directions
        threading.Thread(target=self._accept, name=f"link-{self.port}", daemon=True).start()

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    def down(self) -> None:
        """Nothing crosses from now on; open connections stall, new ones hang."""
        self._up.clear()

    def up(self) -> None:
        self._up.set()

    def down_after(self, nbytes: int, *also: FlakyLink) -> None:
        """Go down (with the links in `also`) once `nbytes` more have crossed: a fault in the
        middle of a download, wherever the device's timing puts it."""
        with self._lock:
            self._trip = (self.forwarded + nbytes, also)

    def cut(self) -> None:
        """End every connection through the link now (both ends see it closed)."""
        with self._lock:
            doomed, self._open = list(self._open), set()
        for sock in doomed:
            _close(sock)

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.cut()
        self._up.set()  # release every thread waiting for the link

    # ------------------------------------------------------------------ forwarding

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._up.wait()  # while down, a new connection goes nowhere
        try:
            upstream = socket.create_connection(self._target, timeout=CONNECT_TIMEOUT_S)
        except OSError:
            _close(client)
            return
        upstream.settimeout(None)
        if not self._track(upstream) or not self._tracked(client):
            _close(upstream)  # cut (or closed) while connecting
            _close(client)
            return
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                self._up.wait()
                data = source.recv(CHUNK)
                if not data:
                    break
                self._up.wait()  # read before the link went down: held until it is up
                self._count(len(data))  # may take the link down: after this chunk
                sink.sendall(data)
        except OSError:
            pass
        # one side finished or failed: the connection ends on both sides (no half-close)
        for sock in (source, sink):
            self._untrack(sock)
            _close(sock)

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self.forwarded += nbytes
            trip = self._trip
            if trip is None or self.forwarded < trip[0]:
                return
            self._trip = None
        for link in (self, *trip[1]):
            link.down()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._open.add(sock)
            return True

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def _tracked(self, sock: socket.socket) -> bool:
        with self._lock:
            return sock in self._open

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@contextmanager
def flaky_link(target_port: int, target_host: str = LOOPBACK) -> Iterator[FlakyLink]:
    link = FlakyLink(target_port, target_host)
    try:
        yield link
    finally:
        link.close()
