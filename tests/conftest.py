"""Real parts for the tests, started the lab's way (lab/): a mosquitto on a free port, a
throw-away PostgreSQL database, moto's S3 server. With CI=true a missing part fails the run
instead of skipping."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from lab.net import free_port, wait_for_port
from lab.processes import anonymous_mosquitto, mosquitto_binary

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("OTA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing part is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mosquitto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private mosquitto on a free port (anonymous, loopback only)."""
    binary = mosquitto_binary()
    if binary is None:
        _missing("mosquitto binary not found")
        return
    with anonymous_mosquitto(binary, tmp_path_factory.mktemp("mosquitto")) as url:
        yield url


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            pass
    except Exception as exc:
        _missing(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards (SQLAlchemy URL)."""
    from server.testing import fresh_postgres_database

    with fresh_postgres_database(pg_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ota.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def shared_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database for a whole module (for a server the module's tests share, each naming
    its own devices): a SQLite file, then a fresh PostgreSQL database."""
    from server.testing import database_url

    pg_admin_url = partial(request.getfixturevalue, "pg_admin_url")
    with database_url(request.param, tmp_path_factory.mktemp("db"), pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def moto_s3_endpoint() -> Iterator[str]:
    """moto in server mode on a free port: real HTTP, boto3 talks to it like to S3."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for moto (any value works; boto3 needs some)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def require_tools(*tools: str) -> None:
    """Skip a test when a program it runs is not installed (with CI=true: fail). `.ci/run`
    installs them; docs/agent.md names their Debian packages."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        _missing(f"not installed: {', '.join(missing)}")


def wait_until(
    check: Callable[[], bool], what: str, timeout_s: float, every_s: float = 0.1
) -> None:
    """Poll `check` until it holds; after `timeout_s` an AssertionError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(every_s)
