"""No secret in a log: `ota server run` (a real process) logs each request as method, path
without its query, status and duration, and neither a `?token=` nor a bearer token appears
anywhere in its output; the device's own client does not log its credential either."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent.errors import TransportError
from agent.server_api import ServerApi
from lab.net import free_port, wait_for_port
from lab.processes import live_server
from server.access_log import ACCESS_LOGGER
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK
from wire import API_PREFIX

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing

ADMIN = "admin-secret-in-a-header"
QUERY_SECRET = "secret-in-a-query"
ENROLL = "enroll-secret-in-a-body"
STOP_TIMEOUT_S = 20


def ota_server(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OTA_ADMIN_TOKEN": ADMIN, "OTA_ENROLLMENT_TOKEN": ENROLL,
           "OTA_DB_URL": f"sqlite:///{tmp_path / 'ota.db'}"}  # fmt: skip
    ota = Path(sys.executable).with_name("ota")
    command = [str(ota), "server", "run", "--port", str(port)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_ota_server_run_logs_requests_without_query_strings_or_tokens(tmp_path: Path) -> None:
    port = free_port()
    server = ota_server(tmp_path, port)
    try:
        wait_for_port(port, timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            # the dashboard's front door sends everyone to its sign-in form
            assert http.get("/", params={"token": QUERY_SECRET}).status_code == 303
            devices = http.get(
                f"{API_PREFIX}/devices", headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert devices.status_code == 200
    finally:
        server.terminate()
        output = server.communicate(timeout=STOP_TIMEOUT_S)[0].decode()
    assert re.search(r"127\.0\.0\.1:\d+ GET / 303 [\d.]+ ms", output), output
    assert re.search(rf"GET {API_PREFIX}/devices 200 [\d.]+ ms", output), output
    assert "token=" not in output
    for secret in (QUERY_SECRET, ADMIN, ENROLL):
        assert secret not in output


def test_access_records_carry_their_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ota.db'}", admin_token=ADMIN)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER), live_server(settings) as url:
        httpx.get(f"{url}{API_PREFIX}/devices?token={QUERY_SECRET}", timeout=20)
    (record,) = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    fields = {k: getattr(record, k) for k in ("method", "path", "status")}
    assert fields == {"method": "GET", "path": f"{API_PREFIX}/devices", "status": 401}
    assert record.duration_ms >= 0
    assert QUERY_SECRET not in record.getMessage()


def test_the_agent_never_logs_its_credential(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ota.db'}", enrollment_token=ENROLL)
    with caplog.at_level(logging.DEBUG), live_server(settings) as url:
        api = ServerApi(url, "phone-1")
        credential = api.enroll(ENROLL, "sim", "stable")
        api.poll()
        with pytest.raises(TransportError) as refused:
            ServerApi(url, "phone-1", credential + "-guessed").poll()
    agent_side = [r.getMessage() for r in caplog.records if not r.name.startswith("server")]
    assert agent_side  # urllib3 logs each request at DEBUG
    assert not [line for line in agent_side if credential in line or ENROLL in line]
    assert credential not in str(refused.value)
