"""Fixtures the server tests share: one database per module (SQLite, and PostgreSQL where it
runs) and a live server on it, with the admin and enrollment tokens below."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import httpx
import pytest

from lab.processes import live_server
from server.settings import Settings
from server.testing import database_url

ADMIN = "admin-secret"
ENROLL = "enroll-secret"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def shared_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    pg_admin_url = partial(request.getfixturevalue, "pg_admin_url")
    with database_url(request.param, tmp_path_factory.mktemp("db"), pg_admin_url) as url:
        yield url


@pytest.fixture(scope="module")
def api(shared_db_url: str) -> Iterator[httpx.Client]:
    settings = Settings(db_url=shared_db_url, admin_token=ADMIN, enrollment_token=ENROLL)
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        yield client
