"""agent.fetcher: ranges, the endless-data cap, the slow-retrieval floor, tuf's error family."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from tuf.api import exceptions as tuf_exceptions

from agent.fetcher import (
    FetchLimits,
    HttpFetcher,
    HttpStatusError,
    RateFloor,
    SlowRetrievalError,
    make_fetcher,
)
from lab.tufrepo import RepoServer

BODY = bytes(range(256)) * 400  # 102400 bytes


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServer]:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "file.bin").write_bytes(BODY)
    with RepoServer(tmp_path) as server:
        yield server


@pytest.fixture
def url(server: RepoServer) -> str:
    return f"{server.targets_url}file.bin"


@pytest.mark.parametrize("ignore_range", [False, True])
def test_fetch_range_returns_the_body_from_start(
    server: RepoServer, url: str, ignore_range: bool
) -> None:
    server.faults.ignore_range = ignore_range
    assert b"".join(make_fetcher().fetch_range(url, 70_000)) == BODY[70_000:]
    assert server.faults.requests[-1][1] == "bytes=70000-"


def test_fetch_range_reads_in_fixed_pieces(url: str) -> None:
    pieces = list(HttpFetcher(FetchLimits(read_size=4096)).fetch_range(url))
    assert max(len(p) for p in pieces) <= 4096
    assert b"".join(pieces) == BODY


def test_endless_data_is_cut_one_byte_past_the_limit(server: RepoServer, url: str) -> None:
    server.faults.extra_bytes = 50 * 1024 * 1024
    got = b"".join(make_fetcher().fetch_range(url, 0, limit=len(BODY)))
    assert got == BODY + b"\0"


def test_a_trickling_server_is_cut_off(server: RepoServer, url: str) -> None:
    server.faults.trickle = 0.02  # 16 bytes every 20 ms: 800 B/s
    fetcher = HttpFetcher(FetchLimits(min_rate=10_000, rate_window=0.3))
    with pytest.raises(SlowRetrievalError):
        b"".join(fetcher.fetch_range(url))


def test_an_error_status_is_an_http_status_error(server: RepoServer) -> None:
    with pytest.raises(HttpStatusError) as caught:
        list(make_fetcher().fetch_range(f"{server.targets_url}missing"))
    assert caught.value.status == 404
    assert caught.value.permanent


def test_the_connection_is_reused_after_a_complete_body_only(server: RepoServer, url: str) -> None:
    pool = urllib3.PoolManager()
    fetcher = HttpFetcher(pool=pool)
    for _ in range(3):
        assert b"".join(fetcher.fetch_range(url)) == BODY
    assert pool.connection_from_url(url).num_connections == 1
    body = fetcher.fetch_range(url)
    next(body)
    body.close()  # stopped early: the half-read answer must not leak into the next one
    assert b"".join(fetcher.fetch_range(url)) == BODY


def test_python_tuf_side_raises_tufs_own_errors(server: RepoServer, url: str) -> None:
    fetcher = make_fetcher()
    assert fetcher.download_bytes(url, len(BODY)) == BODY
    with pytest.raises(tuf_exceptions.DownloadHTTPError) as caught:
        fetcher.download_bytes(f"{server.targets_url}missing", 100)
    assert caught.value.status_code == 404
    with pytest.raises(tuf_exceptions.DownloadLengthMismatchError):
        fetcher.download_bytes(url, 1000)


def test_python_tuf_side_slow_retrieval(server: RepoServer, url: str) -> None:
    server.faults.trickle = 0.02
    fetcher = HttpFetcher(FetchLimits(min_rate=10_000, rate_window=0.3))
    with pytest.raises(tuf_exceptions.SlowRetrievalError):
        fetcher.download_bytes(url, len(BODY))


def test_a_closed_port_is_a_download_error_for_python_tuf(server: RepoServer, url: str) -> None:
    server.close()
    with pytest.raises(tuf_exceptions.DownloadError):
        make_fetcher().download_bytes(url, 100)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_floor_judges_whole_windows() -> None:
    clock = FakeClock()
    floor = RateFloor(min_rate=100, window=10, clock=clock)
    clock.now = 9.9
    floor.feed(1)  # a slow start inside the first window is not judged yet
    clock.now = 10.0
    floor.feed(999)  # 1000 bytes in 10 s: exactly the floor
    clock.now = 20.0
    with pytest.raises(SlowRetrievalError):
        floor.feed(999)  # 999 bytes in the next 10 s
