"""The database away for a moment: over real uvicorn, requests answer 503 with Retry-After
(one line, no traceback), a request cut mid-transaction leaves nothing half written, and the
server recovers by itself once the database is back.

PostgreSQL for real: the test's own database, its server connections terminated with
pg_terminate_backend and new ones refused (ALLOW_CONNECTIONS false). SQLite: a write lock
held by another process past the busy timeout."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import server.db
from lab.processes import live_server
from server.settings import Settings
from server.testing import KeyedDevice, enroll_keyed, new_id, sample_report
from wire import poll_path, reports_path
from wire.paths import REPORTS_PATH

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
WAIT_S = 20.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def settings_for(db_url: str) -> Settings:
    return Settings(db_url=db_url, admin_token=ADMIN, enrollment_token=ENROLL, broker_url=None)


def stored_seqs(api: httpx.Client, device_id: str) -> list[int]:
    answer = api.get(REPORTS_PATH, params={"device_id": device_id}, headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    return sorted(r["seq"] for r in answer.json())


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    assert "database is unavailable" in answer.json()["detail"]
    assert "Traceback" not in answer.text
    assert "File " not in answer.text


def reports_body(device: KeyedDevice, *seqs: int) -> list[dict[str, Any]]:
    return [sample_report(device.device_id, seq).to_dict() for seq in seqs]


# --------------------------------------------------------------------------- PostgreSQL


def database_name(pg_url: str) -> str:
    return pg_url.rsplit("/", 1)[1]


@contextmanager
def database_cut_off(admin_url: str, name: str) -> Iterator[None]:
    """No new connection to `name`, and every open one (but ours) terminated; back on exit."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def wait_for_lock_wait(admin_url: str, name: str) -> None:
    """Until a backend of database `name` waits for a lock (our request, mid-transaction)."""
    deadline = time.monotonic() + WAIT_S
    with psycopg.connect(admin_url, autocommit=True) as admin:
        while time.monotonic() < deadline:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND wait_event_type = 'Lock'",
                (name,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)
    pytest.fail("the request never reached the locked device row")


@pytest.mark.postgres
def test_postgres_cut_off_answers_503_then_recovers_by_itself(
    pg_admin_url: str, pg_url: str
) -> None:
    name = database_name(pg_url)
    with (
        live_server(settings_for(pg_url)) as url,
        httpx.Client(base_url=url, timeout=WAIT_S) as api,
    ):
        device = enroll_keyed(api, new_id("phone"), ENROLL)
        post = api.post(
            reports_path(device.device_id),
            json=reports_body(device, 1),
            headers=bearer(device.token),
        )
        assert post.status_code == 200, post.text
        with database_cut_off(pg_admin_url, name):
            assert_unavailable(api.get(poll_path(device.device_id), headers=bearer(device.token)))
            assert_unavailable(
                api.post(
                    reports_path(device.device_id),
                    json=reports_body(device, 2, 3),
                    headers=bearer(device.token),
                )
            )
            assert_unavailable(api.get(REPORTS_PATH, headers=bearer(ADMIN)))
        # no restart: the next requests find a fresh connection
        again = api.post(
            reports_path(device.device_id),
            json=reports_body(device, 2, 3),
            headers=bearer(device.token),
        )
        assert again.status_code == 200, again.text
        assert again.json()["acked"] == [2, 3]
        assert stored_seqs(api, device.device_id) == [1, 2, 3]
        assert api.get(poll_path(device.device_id), headers=bearer(device.token)).status_code == 200


@pytest.mark.postgres
def test_postgres_connection_lost_mid_transaction_leaves_nothing_half_written(
    pg_admin_url: str, pg_url: str
) -> None:
    name = database_name(pg_url)
    db_admin_url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    with (
        live_server(settings_for(pg_url)) as url,
        httpx.Client(base_url=url, timeout=WAIT_S) as api,
    ):
        device = enroll_keyed(api, new_id("phone"), ENROLL)
        answers: list[httpx.Response] = []
        holder = psycopg.connect(db_admin_url)
        try:
            # the device row locked: the batch inserts its reports, then waits to update it
            holder.execute(
                "SELECT 1 FROM devices WHERE device_id = %s FOR UPDATE", (device.device_id,)
            )
            sender = threading.Thread(
                target=lambda: answers.append(
                    api.post(
                        reports_path(device.device_id),
                        json=reports_body(device, 1, 2, 3),
                        headers=bearer(device.token),
                    )
                )
            )
            sender.start()
            wait_for_lock_wait(pg_admin_url, name)
            with database_cut_off(pg_admin_url, name):  # terminates the holder too
                sender.join(WAIT_S)
        finally:
            holder.close()
        assert not sender.is_alive()
        assert_unavailable(answers[0])
        assert stored_seqs(api, device.device_id) == []  # the inserted reports rolled back
        row = next(
            d
            for d in api.get("/api/v1/devices", headers=bearer(ADMIN)).json()
            if d["device_id"] == device.device_id
        )
        assert row["last_seq"] is None
        resent = api.post(
            reports_path(device.device_id),
            json=reports_body(device, 1, 2, 3),
            headers=bearer(device.token),
        )
        assert resent.status_code == 200, resent.text
        assert stored_seqs(api, device.device_id) == [1, 2, 3]


# --------------------------------------------------------------------------- SQLite


def test_sqlite_locked_past_the_busy_timeout_answers_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.db, "SQLITE_BUSY_TIMEOUT_S", 0.3)
    db_file = tmp_path / "ota.db"
    with (
        live_server(settings_for(f"sqlite:///{db_file}")) as url,
        httpx.Client(base_url=url, timeout=WAIT_S) as api,
    ):
        device = enroll_keyed(api, new_id("phone"), ENROLL)
        holder = sqlite3.connect(db_file, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            assert_unavailable(
                api.post(
                    reports_path(device.device_id),
                    json=reports_body(device, 1),
                    headers=bearer(device.token),
                )
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        post = api.post(
            reports_path(device.device_id),
            json=reports_body(device, 1),
            headers=bearer(device.token),
        )
        assert post.status_code == 200, post.text
        assert stored_seqs(api, device.device_id) == [1]


def test_other_database_errors_stay_500_without_a_traceback(tmp_path: Path) -> None:
    """A programming error (here: a table gone) is no outage: 500, not a 503 to retry."""
    db_file = tmp_path / "ota.db"
    with (
        live_server(settings_for(f"sqlite:///{db_file}")) as url,
        httpx.Client(base_url=url, timeout=WAIT_S) as api,
    ):
        assert api.get(REPORTS_PATH, headers=bearer(ADMIN)).status_code == 200
        with sqlite3.connect(db_file) as conn:
            conn.execute("DROP TABLE reports")
        answer = api.get(REPORTS_PATH, headers=bearer(ADMIN))
        assert answer.status_code == 500
        assert "Retry-After" not in answer.headers
        assert "Traceback" not in answer.text
