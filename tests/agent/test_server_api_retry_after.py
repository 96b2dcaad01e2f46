"""The agent honours a busy server's Retry-After (429/503) over real HTTP: nothing is sent
before the time is up, nothing sleeps (a stopping agent is never held), and the wait is
bounded whatever the header says."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import TransportError
from agent.server_api import (
    DEFAULT_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    ServerApi,
    ServerBusyError,
    retry_after_s,
)


class BusyServer:
    """Answers every request with `status` and a Retry-After header; counts the requests."""

    def __init__(self) -> None:
        self.status = 503
        self.retry_after = "7"
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = b'{"detail": "the database is unavailable for the moment"}'
                self.send_response(outer.status)
                self.send_header("Retry-After", outer.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def busy() -> Iterator[BusyServer]:
    server = BusyServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("status", [503, 429])
def test_nothing_is_sent_before_retry_after_and_nothing_sleeps(
    busy: BusyServer, status: int
) -> None:
    busy.status = status
    clock = FakeClock()
    api = ServerApi(busy.url, "phone-1", bearer="t", clock=clock)
    with pytest.raises(ServerBusyError) as first:
        api.poll()
    assert first.value.retry_after_s == 7.0
    assert first.value.retryable
    assert busy.hits == 1
    clock.now += 6.5  # still inside the server's wait: refused here, at once, no request
    with pytest.raises(ServerBusyError, match=r"asked to wait [01] s"):
        api.send_reports([])
    assert busy.hits == 1
    clock.now += 1.0
    with pytest.raises(ServerBusyError):
        api.poll()
    assert busy.hits == 2


def test_a_huge_retry_after_is_bounded(busy: BusyServer) -> None:
    busy.retry_after = str(7 * 24 * 3600)
    clock = FakeClock()
    api = ServerApi(busy.url, "phone-1", bearer="t", clock=clock)
    with pytest.raises(ServerBusyError) as first:
        api.poll()
    assert first.value.retry_after_s == MAX_RETRY_AFTER_S
    clock.now += MAX_RETRY_AFTER_S + 0.1
    with pytest.raises(ServerBusyError):
        api.poll()
    assert busy.hits == 2


def test_other_errors_set_no_wait(busy: BusyServer) -> None:
    busy.status = 500
    api = ServerApi(busy.url, "phone-1", bearer="t", clock=FakeClock())
    for _ in range(2):
        with pytest.raises(TransportError) as caught:
            api.poll()
        assert not isinstance(caught.value, ServerBusyError)
    assert busy.hits == 2


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert retry_after_s(header, now=now.timestamp()) == 42.0
    past = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert retry_after_s(past, now=now.timestamp()) == 0.0


@given(st.one_of(st.none(), st.text(max_size=40), st.floats().map(str)))
def test_any_header_gives_a_bounded_wait(header: str | None) -> None:
    wait = retry_after_s(header, now=0.0)
    assert 0.0 <= wait <= MAX_RETRY_AFTER_S
    if not header or not header.strip():
        assert wait == DEFAULT_RETRY_AFTER_S
