"""`ota server run --workers 2` on PostgreSQL with a real mosquitto configured as
`ota broker mosquitto-config` configures it (issue 12): the two workers log in on the server
listener under the one server login (decision 0026) and share the status topics, so each MQTT
report, published by each device under its own login, reaches exactly one of them and is stored
once; both take a share, and the once-only work has one leader. SQLite refuses workers."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from conftest import require_tools
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from lab.net import free_port
from lab.processes import mosquitto, mosquitto_binary, with_login
from server.db import make_engine, make_sessions, upgrade_to_head
from server.models import Device, Report, utcnow
from server.mosquitto import BrokerDevice, write_broker_config
from server.testing import MOSQUITTO_PIPE_LEAK, sample_report
from wire import device_status_topic
from wire.paths import HEALTH_PATH

pytestmark = [pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK), pytest.mark.mosquitto]

OTA = Path(sys.executable).with_name("ota")
DEVICES, REPORTS_EACH = 20, 10
WAIT_S = 60.0
LEADS = "now leads the once-only work"


def log_records(log: Path) -> list[dict[str, object]]:
    records = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def messages(log: Path, text: str) -> list[str]:
    return [str(r["message"]) for r in log_records(log) if text in str(r.get("message", ""))]


def wait_for(check: object, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, f"the server stopped: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S}s: {log.read_text()[-2000:]}"
        time.sleep(0.2)


@pytest.fixture
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    upgrade_to_head(engine)
    yield make_sessions(engine)
    engine.dispose()  # also when the test failed: a leaked connection warns in a later test


@pytest.mark.postgres
def test_two_workers_store_each_mqtt_report_once_and_share_them(
    pg_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    binary = mosquitto_binary()
    if binary is None:
        require_tools("mosquitto")
        return
    device_ids = [f"phone-{n}" for n in range(DEVICES)]
    logins = [BrokerDevice(d, "stable", "sim", secrets.token_urlsafe(12)) for d in device_ids]
    device_port, server_port, server_password = free_port(), free_port(), secrets.token_urlsafe(12)
    paths = write_broker_config(
        tmp_path / "broker",
        logins,
        port=free_port(),
        server_password=server_password,
        plain_port=device_port,
        server_port=server_port,
        run_as_user=getpass.getuser(),  # as root, mosquitto would drop to a user without access
    )
    broker_url = with_login(f"mqtt://127.0.0.1:{server_port}", "ota-server", server_password)
    with sessions() as session:
        for device_id in device_ids:
            session.add(
                Device(device_id=device_id, model="sim", channel="stable", enrolled_at=utcnow())
            )
        session.commit()

    def stored() -> int:
        with sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Report)) or 0)

    port, log = free_port(), tmp_path / "server.log"
    env = {**os.environ, "OTA_ADMIN_TOKEN": "admin", "OTA_MQTT_CONNECT_WAIT_S": "10",
           "OTA_ROLLOUT_TICK_S": "0.2"}  # fmt: skip
    command = [str(OTA), "server", "run", "--workers", "2", "--port", str(port),
               "--db-url", pg_url, "--broker-url", broker_url]  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(mosquitto(binary, paths.conf, device_port, tmp_path / "mosquitto.log"))
        with log.open("wb") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        stack.callback(proc.wait, timeout=60)
        stack.callback(proc.send_signal, signal.SIGINT)
        wait_for(lambda: len(messages(log, "startup complete")) == 2, "two workers", proc, log)
        wait_for(lambda: messages(log, LEADS), "a leader", proc, log)
        httpx.get(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=10).raise_for_status()
        time.sleep(1.0)  # both workers' SUBSCRIBEs are acknowledged by now
        for login in logins:  # each device publishes its own status under its own login
            device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=login.device_id)
            device.username_pw_set(login.device_id, login.password)
            device.connect("127.0.0.1", device_port)
            device.loop_start()
            for seq in range(REPORTS_EACH):
                report = sample_report(login.device_id, seq).to_json()
                topic = device_status_topic(login.device_id)
                device.publish(topic, report, qos=1).wait_for_publish(10)
            device.disconnect()
            device.loop_stop()
        wait_for(lambda: stored() >= DEVICES * REPORTS_EACH, "reports stored", proc, log)
        # Counted while both run: on shutdown the leader unlocks first and the other worker may
        # take over for its last ticks, which is leadership moving, not two leaders.
        leaders_while_running = len(messages(log, LEADS))
        assert stored() == DEVICES * REPORTS_EACH
    handled = [int(m.split("handled ")[1].split()[0]) for m in messages(log, "handled")]
    assert len(handled) == 2, handled
    assert sum(handled) == DEVICES * REPORTS_EACH, handled
    assert all(n > 0 for n in handled), handled  # each worker took a share
    assert leaders_while_running == 1  # the other worker's ticks found the lock taken
    # neither worker took the other's connection over (decision 0026)
    assert "already connected" not in (tmp_path / "mosquitto.log").read_text()


def test_workers_on_sqlite_are_refused_in_one_line(tmp_path: Path) -> None:
    command = [str(OTA), "server", "run", "--workers", "2",
               "--db-url", f"sqlite:///{tmp_path / 'ota.db'}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "--workers 2 needs PostgreSQL" in done.stderr
    assert not (tmp_path / "ota.db").exists()
