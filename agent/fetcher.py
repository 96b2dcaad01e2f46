"""HTTP for the device: one urllib3 pool for TUF metadata and for ROM images.

`HttpFetcher` is python-tuf's `FetcherInterface` (metadata goes through `Updater`, which wants
tuf's `DownloadError` family) and also a `RangeFetcher`, the boundary `agent.download` streams
a slot's bytes through: every outside failure leaves it as the agent's `TransportError`, and
whether asking again can help (`TransportError.retryable`) is decided here, where the HTTP
answer is understood, not in the download loop.

Both paths share the same guards: connect and read timeouts, a floor on the transfer rate
over a window (a server that trickles bytes is cut off: "slow retrieval"), reads of a fixed
size (memory stays bounded), and, for `fetch_range`, a cap on how much body is read at all
("endless data"). Bodies are asked for and hashed as sent (`Accept-Encoding: identity`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Final, Protocol

import tuf
import urllib3
from tuf.api import exceptions as tuf_exceptions
from tuf.ngclient.fetcher import FetcherInterface

from agent.errors import TransportError
from agent.reset_retry import OnceAfterAReset

DEFAULT_USER_AGENT: Final = f"orangefriday-agent/0.1 python-tuf/{tuf.__version__}"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_QUERY = re.compile(r"\?[^\s'\"<>)]+")
# urllib3's loggers that print URLs: a redirect's Location (a presigned object-store link,
# whose query string is a credential until it expires) would reach the device's log.
_URL_LOGGERS: Final = ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry")


def redact_query(text: str) -> str:
    """`text` with every URL query string cut to `?...`: no signature reaches a log."""
    return _QUERY.sub("?...", text)


class RedactQueries(logging.Filter):
    """Rewrites a record's message with its URLs' query strings cut (see `redact_query`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = redact_query(message), None
        return True


for _name in _URL_LOGGERS:
    logging.getLogger(_name).addFilter(RedactQueries())


class RangeFetcher(Protocol):
    """What the image download needs from the network: the bytes of `url` from `start` on.

    Raises `TransportError` (with `retryable` set) for every outside failure. The stream is a
    generator, so the caller can `close()` it (dropping the connection) when it stops early.
    """

    def fetch_range(
        self, url: str, start: int = 0, *, limit: int | None = None
    ) -> Generator[bytes, None, None]: ...


def is_permanent_status(status: int) -> bool:
    """A client error that retrying the same request will not fix (404, 403, 416...)."""
    return 400 <= status < 500 and status not in (408, 425, 429)


class HttpStatusError(TransportError):
    """The server answered with an HTTP error status (kept, so callers can decide on it)."""

    def __init__(self, url: str, status: int) -> None:
        permanent = is_permanent_status(status)
        super().__init__(f"HTTP {status} for {redact_query(url)}", retryable=not permanent)
        self.status = status

    @property
    def permanent(self) -> bool:
        """A client error that retrying the same request will not fix (404, 403, 416...)."""
        return not self.retryable


class SlowRetrievalError(TransportError):
    """The server sent too little for too long (under the rate floor, or nothing at all)."""


@dataclass(frozen=True)
class FetchLimits:
    """How patient the device is with a server. Every number has a reason:

    - `connect_timeout`/`read_timeout`: seconds before a silent server counts as gone;
    - `min_rate` over `rate_window`: bytes/s a transfer must average over each window, or it
      is cut off (a server sending one byte every few seconds never hits a read timeout);
    - `read_size`: most bytes per socket read (512 KiB: fewer, larger pieces to hash and
      write), so memory does not grow with the image.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    min_rate: float = 1024.0
    rate_window: float = 60.0
    read_size: int = 512 * 1024


class RateFloor:
    """Raises `SlowRetrievalError` when a transfer averages under `min_rate` over a window."""

    def __init__(
        self, min_rate: float, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._min_rate = min_rate
        self._window = window
        self._clock = clock
        self._start = clock()
        self._bytes = 0

    def feed(self, count: int) -> None:
        self._bytes += count
        now = self._clock()
        elapsed = now - self._start
        if elapsed < self._window:
            return
        rate = self._bytes / elapsed
        if rate < self._min_rate:
            raise SlowRetrievalError(
                f"slow retrieval: {rate:.0f} B/s over {elapsed:.1f}s, "
                f"floor is {self._min_rate:.0f} B/s"
            )
        self._start, self._bytes = now, 0


class HttpFetcher(FetcherInterface):
    """urllib3-based fetcher for metadata (python-tuf) and resumable image downloads."""

    def __init__(
        self,
        limits: FetchLimits | None = None,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.limits = limits or FetchLimits()
        self._headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
        self._pool = pool or urllib3.PoolManager()

    # ------------------------------------------------------------------ python-tuf side

    def _fetch(self, url: str) -> Iterator[bytes]:
        """FetcherInterface: tuf's error family, because `Updater` decides on it (403/404)."""
        try:
            response = self._request(url, {})
        except TransportError as exc:
            raise tuf_exceptions.DownloadError(str(exc)) from exc
        if response.status >= 400:
            _discard(response)
            raise tuf_exceptions.DownloadHTTPError(f"HTTP {response.status}", response.status)
        return self._tuf_chunks(response)

    def _tuf_chunks(self, response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            yield from self._body(response, limit=None)
        except SlowRetrievalError as exc:
            raise tuf_exceptions.SlowRetrievalError(str(exc)) from exc
        except TransportError as exc:
            raise tuf_exceptions.DownloadError(str(exc)) from exc

    # ------------------------------------------------------------------ image side

    def fetch_range(
        self, url: str, start: int = 0, *, limit: int | None = None
    ) -> Generator[bytes, None, None]:
        """The body of `url` from byte `start` on (HTTP `Range: bytes=start-`).

        A server that ignores the range (200) is handled by skipping `start` bytes. With
        `limit`, at most `limit + 1` bytes are passed on and the connection is then dropped:
        enough for the caller to see the body is too long, never more (endless data).
        Raises `TransportError` (`HttpStatusError` for an error status).
        """
        headers = {"Range": f"bytes={start}-"} if start > 0 else {}
        response = self._request(url, headers)
        skip = _bytes_to_skip(url, response, start)
        cap = None if limit is None else skip + limit + 1
        body = self._body(response, limit=cap)
        try:
            yield from _skip_prefix(body, skip)
        finally:
            body.close()

    # ------------------------------------------------------------------ shared

    def _request(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        timeout = urllib3.Timeout(
            connect=self.limits.connect_timeout, read=self.limits.read_timeout
        )
        retries = OnceAfterAReset(connect=2, read=1, status=0, other=0, redirect=3)
        try:
            return self._pool.request(
                "GET",
                url,
                headers={**self._headers, **headers},
                preload_content=False,
                decode_content=False,
                timeout=timeout,
                retries=retries,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise TransportError(
                f"cannot fetch {redact_query(url)}: {redact_query(str(exc))}"
            ) from exc

    def _body(
        self, response: urllib3.BaseHTTPResponse, limit: int | None
    ) -> Generator[bytes, None, None]:
        """Read the body in fixed-size pieces under the rate floor; at most `limit` bytes."""
        floor = RateFloor(self.limits.min_rate, self.limits.rate_window)
        received = 0
        done = False
        try:
            while limit is None or received < limit:
                want = self.limits.read_size
                if limit is not None:
                    want = min(want, limit - received)
                data = _read_some(response, want)
                if not data:
                    done = True
                    return
                received += len(data)
                floor.feed(len(data))
                yield data
        finally:
            _finish(response, clean=done)


def make_fetcher(
    limits: FetchLimits | None = None, *, user_agent: str = DEFAULT_USER_AGENT
) -> HttpFetcher:
    """The fetcher a device runs with (one pool for metadata and images)."""
    return HttpFetcher(limits, user_agent=user_agent)


def _read_some(response: urllib3.BaseHTTPResponse, amount: int) -> bytes:
    try:
        return response.read1(amount)
    except urllib3.exceptions.TimeoutError as exc:
        raise SlowRetrievalError(f"slow retrieval: no data for too long ({exc})") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransportError(f"connection broken: {redact_query(str(exc))}") from exc


def _bytes_to_skip(url: str, response: urllib3.BaseHTTPResponse, start: int) -> int:
    """How much of the answer precedes `start` (0 for a proper 206, `start` for a 200)."""
    if response.status >= 400:
        _discard(response)
        raise HttpStatusError(url, response.status)
    if start == 0 or response.status == 200:
        return start
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == start:
            return 0
    _discard(response)
    raise TransportError(
        f"unusable answer to a range request for {redact_query(url)}: {response.status}"
    )


def _skip_prefix(chunks: Iterator[bytes], skip: int) -> Iterator[bytes]:
    for data in chunks:
        if skip >= len(data):
            skip -= len(data)
            continue
        yield data[skip:] if skip else data
        skip = 0


def _finish(response: urllib3.BaseHTTPResponse, *, clean: bool) -> None:
    """Give a fully read connection back to the pool; close one we stopped reading early."""
    if not clean:
        response.close()
    response.release_conn()


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    _finish(response, clean=False)
