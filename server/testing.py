"""Test data for the server's tests: throw-away databases, unique names, sample bodies.
Starting the server, a broker or a fleet is the lab's (lab/)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wire import StatusReport, UpdateState


@contextmanager
def database_url(kind: str, tmp_dir: Path, pg_admin_url: Callable[[], str]) -> Iterator[str]:
    """A SQLite file in `tmp_dir`, or (kind "postgresql") a fresh PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir / 'ota.db'}"
        return
    with fresh_postgres_database(pg_admin_url()) as url:
        yield url


@contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy psycopg URL), dropped on exit."""
    import uuid

    import psycopg

    name = f"of_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_id(prefix: str) -> str:
    """A name no other test uses (devices, channels: tests share servers and brokers)."""
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sample_release(
    version: str, counter: int, channel: str = "stable", model: str = "sim"
) -> dict[str, Any]:
    """A body for POST /api/v1/releases, as the signing side sends it."""
    return {
        "version": version,
        "channel": channel,
        "model": model,
        "target_path": f"{model}/{channel}/{version}/rom.img",
        "length": 1024,
        "sha256": "ab" * 32,
        "notes": f"build {version}",
        "published_at": "2026-11-27T10:00:00Z",
        "release_counter": counter,
    }


def sample_report(
    device_id: str, seq: int, state: UpdateState = UpdateState.DOWNLOADING
) -> StatusReport:
    return StatusReport(
        device_id=device_id, seq=seq, state=state, current_version="2026.46", slot="a"
    )


# tests/conftest.py's mosquitto_url leaves the mosquitto process's stderr pipe open; the leak
# surfaces as an unraisable-exception warning at session teardown, after whichever test ran
# last. The server's test modules ignore exactly that one message until the fixture closes it.
MOSQUITTO_PIPE_LEAK = (
    r"ignore:Exception ignored in. <_io.FileIO name=\d+ mode='rb' closefd=True>"
    ":pytest.PytestUnraisableExceptionWarning"
)


@contextmanager
def dashboard_client(base_url: str, token: str) -> Iterator[Any]:
    """An httpx.Client signed in to the dashboard with `token` (the form, then the cookie);
    the sign-in's answer is in `.signin_status`."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=20) as client:
        answer = client.post("/signin", data={"token": token, "next": "/"})
        client.signin_status = answer.status_code  # type: ignore[attr-defined]
        yield client
