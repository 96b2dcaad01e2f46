"""Stale trusted metadata: devices say on each poll which TUF timestamp they trust; the server
flags those lagging the served one past the threshold (or holding an expired one), lists them
(`ota devices --stale`) and counts them in the rollout view. Over real uvicorn, on SQLite
and PostgreSQL; the age arithmetic with hypothesis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from server.cli import app as ota
from server.services.staleness import TrustCheck
from server.settings import Settings
from server.testing import KeyedDevice, enroll_keyed, new_id, sample_release
from wire import TRUSTED_TIMESTAMP_HEADER, TrustedTimestamp, poll_path
from wire.paths import DEVICES_PATH, RELEASES_PATH, ROLLOUTS_PATH, rollout_path

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
SERVED_VERSION = 40
HOUR = 3600.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def served_expires() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(hours=20)


@pytest.fixture
def api(db_url: str, tmp_path: Path, served_expires: datetime) -> Iterator[httpx.Client]:
    repo = tmp_path / "repository"
    (repo / "metadata").mkdir(parents=True)
    signed = {"version": SERVED_VERSION, "expires": served_expires.isoformat()}
    (repo / "metadata" / "timestamp.json").write_text(json.dumps({"signed": signed}))
    settings = Settings(
        db_url=db_url,
        repo_dir=repo,
        admin_token=ADMIN,
        enrollment_token=ENROLL,
        stale_metadata_after_s=4 * HOUR,
    )
    from lab.processes import live_server

    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        yield client


def poll(api: httpx.Client, device: KeyedDevice, header: str | None) -> httpx.Response:
    headers = bearer(device.token)
    if header is not None:
        headers[TRUSTED_TIMESTAMP_HEADER] = header
    return api.get(poll_path(device.device_id), headers=headers)


def trusting(version: int, expires: datetime) -> str:
    return TrustedTimestamp(version, expires.timestamp()).to_header()


def rows(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {d["device_id"]: d for d in api.get(DEVICES_PATH, headers=bearer(ADMIN)).json()}


def test_stale_devices_are_flagged_listed_and_counted(
    api: httpx.Client, served_expires: datetime
) -> None:
    current, behind, expired, old_agent = (
        enroll_keyed(api, new_id("phone"), ENROLL) for _ in "1234"
    )
    assert poll(api, current, trusting(SERVED_VERSION, served_expires)).status_code == 200
    behind_by = timedelta(hours=10)  # a frozen copy: valid still, ten hours old
    assert poll(api, behind, trusting(12, served_expires - behind_by)).status_code == 200
    gone = datetime.now(UTC) - timedelta(hours=1)
    assert poll(api, expired, trusting(SERVED_VERSION - 1, gone)).status_code == 200
    assert poll(api, old_agent, None).status_code == 200  # says nothing: unknown, not stale

    fleet = rows(api)
    assert fleet[current.device_id]["trust_age_s"] == 0.0
    assert fleet[behind.device_id]["trust_age_s"] == pytest.approx(10 * HOUR, abs=1)
    assert fleet[behind.device_id]["trusted_timestamp_version"] == 12
    assert fleet[old_agent.device_id]["trust_age_s"] is None
    stale = {d for d, row in fleet.items() if row["stale"]}
    assert stale == {behind.device_id, expired.device_id}

    listed = CliRunner().invoke(
        ota, ["devices", "--stale", "--json", "--server", str(api.base_url), "--token", ADMIN]
    )
    assert listed.exit_code == 0, listed.output
    assert {d["device_id"] for d in json.loads(listed.output)} == stale
    text = CliRunner().invoke(
        ota, ["devices", "--stale", "--server", str(api.base_url), "--token", ADMIN]
    )
    assert "STALE(10.0 h behind)" in text.output

    body = {**sample_release("2026.48", 1), "percentage": 0}
    release = api.post(RELEASES_PATH, json=body, headers=bearer(ADMIN))
    assert release.status_code == 201, release.text
    staged = api.post(
        ROLLOUTS_PATH, json={"release_id": release.json()["id"]}, headers=bearer(ADMIN)
    )
    assert staged.status_code in (200, 201), staged.text
    status = api.get(rollout_path(staged.json()["rollout_id"]), headers=bearer(ADMIN))
    assert status.json()["stale_devices"] == 2

    # the frozen device catches up: no longer stale
    assert poll(api, behind, trusting(SERVED_VERSION, served_expires)).status_code == 200
    assert not rows(api)[behind.device_id]["stale"]


@pytest.mark.parametrize(
    "header", ["version=1", "version=x; expires=1", "version=0; expires=1", "a=1; b=2", "v" * 80]
)
def test_a_malformed_trust_header_is_refused_and_changes_nothing(
    api: httpx.Client, header: str
) -> None:
    device = enroll_keyed(api, new_id("phone"), ENROLL)
    answer = poll(api, device, header)
    assert answer.status_code == 422
    assert "Traceback" not in answer.text
    row = rows(api)[device.device_id]
    assert row["trusted_timestamp_version"] is None
    assert row["last_seen"] is None


# --------------------------------------------------------------------------- pure


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SERVED = (100, NOW + timedelta(hours=24))
hours = st.floats(min_value=-48, max_value=48, allow_nan=False)


@given(version=st.integers(1, 200), lag_h=hours, threshold_h=st.floats(0, 24))
def test_age_and_staleness(version: int, lag_h: float, threshold_h: float) -> None:
    check = TrustCheck(SERVED, threshold_h * HOUR, NOW)
    expires = SERVED[1] - timedelta(hours=lag_h)
    age = check.age_s(version, expires)
    assert age is not None
    assert age >= 0
    if version >= SERVED[0]:
        assert age == 0
    else:
        assert age == pytest.approx(max(0.0, lag_h * HOUR))
    assert check.is_stale(version, expires) == (age > threshold_h * HOUR or expires <= NOW)


def test_unknown_trust_is_never_stale() -> None:
    check = TrustCheck(SERVED, 0.0, NOW)
    assert check.age_s(None, None) is None
    assert not check.is_stale(None, None)
    unserved = TrustCheck(None, HOUR, NOW)
    assert unserved.age_s(5, NOW + timedelta(hours=1)) == 0.0
    assert unserved.is_stale(5, NOW - timedelta(hours=2))


def test_the_header_round_trips() -> None:
    trusted = TrustedTimestamp(7, 1_796_162_341.0)
    assert TrustedTimestamp.from_header(trusted.to_header()) == trusted
