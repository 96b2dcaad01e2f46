"""A request sent on a kept-alive connection the server has just dropped (uvicorn closes idle
ones after 5 s) fails with "connection reset" though the server never handled it. The
agent sends such a request again, once, on a new connection, when doing it twice is
harmless (GETs, reports, command acks); the others fail as before and its loop decides.

`lab.resetting` makes that race certain over real TCP, which uvicorn's idle timer does not."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from agent.errors import TransportError
from agent.fetcher import FetchLimits, HttpFetcher
from agent.server_api import ServerApi
from lab.resetting import resetting_server
from wire import PollAnswer, StatusReport, UpdateState

ANSWERS = {
    "GET": json.dumps(PollAnswer(notice=None).to_dict()).encode(),
    "POST": b'{"v": 1, "acked": [0]}',
}


def report() -> StatusReport:
    return StatusReport(device_id="dev-1", seq=0, state=UpdateState.IDLE, current_version="1.0")


def test_a_poll_on_a_connection_reset_under_it_is_sent_again_on_a_new_one() -> None:
    with resetting_server(ANSWERS) as server:
        api = ServerApi(server.url, "dev-1", bearer="tester-token")
        api.poll()
        assert api.poll() == PollAnswer(notice=None)
        assert [n for n, _ in server.requests] == [1, 1, 2]


def test_reports_are_sent_again_too_the_server_stores_them_once_by_seq() -> None:
    with resetting_server(ANSWERS) as server:
        api = ServerApi(server.url, "dev-1", bearer="tester-token")
        api.poll()
        assert api.send_reports([report()]) == {0}
        assert [n for n, line in server.requests if line.startswith("POST")] == [1, 2]


def test_a_request_that_must_not_run_twice_is_not_sent_again() -> None:
    with resetting_server(ANSWERS) as server:
        api = ServerApi(server.url, "dev-1", bearer="tester-token")
        api.poll()
        with pytest.raises(TransportError, match=r"POST .*redeem"):
            api.redeem_fcode("F-CODE-1")
        assert len(server.requests) == 2  # the F-code went out once


def test_a_metadata_or_image_fetch_on_a_reset_connection_is_sent_again() -> None:
    with resetting_server({"GET": b'{"signed": {}}'}) as server:
        fetcher = HttpFetcher()
        url = f"{server.url}/tuf/metadata/timestamp.json"
        assert b"".join(fetcher.fetch_range(url)) == b'{"signed": {}}'
        assert b"".join(fetcher.fetch_range(url)) == b'{"signed": {}}'
        assert [n for n, _ in server.requests] == [1, 1, 2]


def test_a_server_that_does_not_answer_in_time_is_not_asked_twice() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        accepted: list[socket.socket] = []
        taker = threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True)
        taker.start()
        port = silent.getsockname()[1]
        fetcher = HttpFetcher(FetchLimits(connect_timeout=2.0, read_timeout=0.3))
        with pytest.raises(TransportError, match="timed out"):
            b"".join(fetcher.fetch_range(f"http://127.0.0.1:{port}/big.img"))
        taker.join(timeout=5)
        silent.settimeout(0.5)
        with pytest.raises(TimeoutError):  # no second connection came
            silent.accept()
        for conn in accepted:
            conn.close()
