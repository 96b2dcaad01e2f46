"""`/health` says how long the served repository stays trusted, and whether the server
renews it; `/api/v1/whoami` says which role a token has."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from lab.processes import live_server
from server.api_client import ApiError, OtaApi
from server.services.freshness import freshness, problems_of, server_health
from server.settings import Settings
from signing.keys import init_keys

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def test_a_fresh_renewed_repository_has_no_problems() -> None:
    repo = freshness(3, NOW + timedelta(hours=23), NOW, renewing=True, renew_every_s=3600)
    assert repo.expires_in_s == 23 * 3600
    assert problems_of(repo) == []


def test_a_repository_nobody_renews_is_a_problem_before_it_expires() -> None:
    repo = freshness(3, NOW + timedelta(hours=2), NOW, renewing=False, renew_every_s=3600)
    assert problems_of(repo) == [
        "the repository's timestamp expires in 2.0 h",
        "no online keys: the timestamp is not re-signed (ota server run --online-keys DIR)",
    ]


def test_an_expired_repository_is_not_healthy(tmp_path: Path) -> None:
    init_keys(tmp_path / "repo")
    later = datetime.now(UTC) + timedelta(days=2)
    health = server_health(
        tmp_path / "repo" / "repository", renewing=True, renew_every_s=3600, now=later
    )
    assert not health.ok
    assert health.problems[0].startswith("the repository's timestamp has expired")


def test_health_and_whoami_over_http(tmp_path: Path) -> None:
    init_keys(tmp_path / "repo")
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 's.db'}",
        repo_dir=tmp_path / "repo" / "repository",
        online_keys_dir=tmp_path / "repo" / "keys",
        admin_token="admin",
    )
    with live_server(settings) as url:
        health = httpx.get(url + "/health", timeout=10).json()
        with OtaApi(url, "admin") as api:
            assert api.whoami().role == "admin"
        with OtaApi(url, "wrong") as api, pytest.raises(ApiError) as refused:
            api.whoami()
    assert health["ok"] is True
    assert health["repository"]["renewing"] is True
    assert 23 * 3600 < health["repository"]["expires_in_s"] <= 24 * 3600
    assert refused.value.status == 401
