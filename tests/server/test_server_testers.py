"""F-codes, feedback, votes, surfacing and blocking over real uvicorn, on SQLite and
PostgreSQL, with role tokens from `server.auth`; and `ota fcode` / `ota feedback`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from lab.processes import live_server
from server.api_client import OtaApi
from server.auth import Role, issue_token
from server.cli import app as ota_app
from server.cli_common import parse_duration
from server.db import make_engine, make_sessions
from server.models import Device, FCode, utcnow
from server.schemas import FCodeIssue
from server.services.fcodes import hash_code
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK, enroll_keyed, new_id
from wire import leave_preview_path, poll_path

ENROLL = "enroll-secret"
pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing


@dataclass
class Api:
    http: httpx.Client
    sessions: sessionmaker[Session]
    url: str

    def token(self, role: Role, subject: str = "") -> str:
        with self.sessions() as session:
            token = issue_token(session, role=role, subject=subject or new_id(role.value))
            session.commit()
        return token

    def enroll(self, channel: str = "stable") -> tuple[str, str]:
        device = enroll_keyed(self.http, new_id("phone"), ENROLL, channel=channel)
        return device.device_id, device.token

    def device(self, device_id: str) -> Device:
        with self.sessions() as session:
            return session.get_one(Device, device_id)

    def fcode(self, code: str) -> FCode:
        with self.sessions() as session:
            row = session.scalar(select(FCode).where(FCode.code_hash == hash_code(code)))
            assert row is not None
            return row


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def api(shared_db_url: str) -> Iterator[Api]:
    settings = Settings(db_url=shared_db_url, enrollment_token=ENROLL, admin_token="admin-secret")
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        engine = make_engine(shared_db_url)
        try:
            yield Api(client, make_sessions(engine), url)
        finally:
            engine.dispose()


def issue(api: Api, count: int, **extra: Any) -> list[str]:
    with OtaApi(api.url, api.token(Role.RELEASE_ENGINEER)) as engineer:
        issued = engineer.issue_fcodes(FCodeIssue(count=count, expires_in_s=3600, **extra))
    assert issued.channel == extra.get("channel", "preview")
    return issued.codes


def redeem(api: Api, device_id: str, credential: str, code: str) -> httpx.Response:
    path = f"/api/v1/devices/{device_id}/redeem"
    return api.http.post(path, json={"code": code}, headers=bearer(credential))


# ---------------------------------------------------------------------- F-codes


def test_a_code_moves_a_device_to_preview_once_and_hands_out_a_tester_token(api: Api) -> None:
    codes = issue(api, 3)
    assert len(set(codes)) == 3
    assert all(api.fcode(c).code_hash == hash_code(c) for c in codes)  # stored hashed only
    device_id, credential = api.enroll()
    answer = redeem(api, device_id, credential, codes[0].lower().replace("-", " "))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["channel"], body["previous_channel"]) == ("preview", "stable")
    assert api.device(device_id).channel == "preview"
    spent = api.fcode(codes[0])
    assert (spent.redeemed_by, spent.redeemed_at is not None) == (device_id, True)
    surfacing = api.http.get(
        "/api/v1/feedback/surfacing", params={"build": "1"}, headers=bearer(body["tester_token"])
    )
    assert surfacing.status_code == 200, surfacing.text  # the token is a tester's


def _refused(api: Api, code: str, status: int, words: str) -> None:
    device_id, credential = api.enroll()
    before = api.fcode(code) if status != 404 else None
    answer = redeem(api, device_id, credential, code)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]
    assert "tester_token" not in answer.json()
    assert api.device(device_id).channel == "stable"
    if before is not None:
        after = api.fcode(code)
        assert (after.redeemed_at, after.redeemed_by) == (before.redeemed_at, before.redeemed_by)


def test_used_expired_and_unknown_codes_are_refused_and_change_nothing(api: Api) -> None:
    used, fresh = issue(api, 2)
    first, credential = api.enroll()
    assert redeem(api, first, credential, used).status_code == 200
    _refused(api, used, 409, "used already")
    expired = "F-EXPI-REDC-ODE0-" + new_id("x")[-4:].upper()
    with api.sessions() as session:
        now = utcnow()
        week_ago, yesterday = now - timedelta(days=8), now - timedelta(days=1)
        gone = FCode(code_hash=hash_code(expired), channel="preview",
                     created_at=week_ago, expires_at=yesterday)  # fmt: skip
        session.add(gone)
        session.commit()
    _refused(api, expired, 410, "expired")
    _refused(api, "F-NOPE-NOPE-NOPE-NOPE", 404, "unknown F-code")
    other, _ = api.enroll()
    as_other = redeem(api, other, credential, fresh)  # a device redeems only for itself
    assert as_other.status_code == 403
    assert api.fcode(fresh).redeemed_at is None
    assert api.device(other).channel == "stable"


def test_an_expired_code_does_not_bring_its_device_back_after_it_left(api: Api) -> None:
    device_id, credential = api.enroll()
    (code,) = issue(api, 1)
    assert redeem(api, device_id, credential, code).status_code == 200
    assert redeem(api, device_id, credential, code).status_code == 200  # a retry, in time
    left = api.http.post(leave_preview_path(device_id), headers=bearer(credential))
    assert left.status_code == 200, left.text
    with api.sessions() as session:
        expired = update(FCode).where(FCode.code_hash == hash_code(code))
        session.execute(expired.values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    answer = redeem(api, device_id, credential, code)
    assert answer.status_code == 410, answer.text
    assert "expired" in answer.json()["detail"]
    assert api.device(device_id).channel == "stable"


def test_only_release_engineers_issue_codes(api: Api) -> None:
    body = {"count": 1, "expires_in_s": 60}
    assert api.http.post("/api/v1/fcodes", json=body).status_code == 401
    for role in (Role.VIEWER, Role.TESTER):
        answer = api.http.post("/api/v1/fcodes", json=body, headers=bearer(api.token(role)))
        assert answer.status_code == 403, role
    token = api.token(Role.RELEASE_ENGINEER)
    for bad in ({"count": 0, "expires_in_s": 60}, {"count": 1, "expires_in_s": -5},
                {"count": 1, "expires_in_s": 60, "channel": "a/b"}):  # fmt: skip
        assert api.http.post("/api/v1/fcodes", json=bad, headers=bearer(token)).status_code == 422


def test_leaving_preview_moves_the_device_to_stable_and_ends_its_tester_token(api: Api) -> None:
    device_id, credential = api.enroll()
    first = redeem(api, device_id, credential, issue(api, 1)[0]).json()["tester_token"]
    again = redeem(api, device_id, credential, issue(api, 1)[0]).json()["tester_token"]
    surfacing = "/api/v1/feedback/surfacing?build=1"
    assert api.http.get(surfacing, headers=bearer(first)).status_code == 401  # rotated
    assert api.http.get(surfacing, headers=bearer(again)).status_code == 200
    path = f"/api/v1/devices/{device_id}/leave-preview"
    assert api.http.post(path).status_code == 401
    answer = api.http.post(path, headers=bearer(credential))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"device_id": device_id, "channel": "stable",
                             "previous_channel": "preview"}  # fmt: skip
    assert api.device(device_id).channel == "stable"
    assert api.http.get(surfacing, headers=bearer(again)).status_code == 401  # revoked
    internal, internal_credential = api.enroll(channel="internal")
    refused = api.http.post(
        f"/api/v1/devices/{internal}/leave-preview", headers=bearer(internal_credential)
    )
    assert refused.status_code == 409
    assert api.device(internal).channel == "internal"
    assert api.http.get(poll_path(device_id), headers=bearer(credential)).status_code == 200


# ---------------------------------------------------------------------- feedback


def joined_tester(api: Api) -> tuple[str, str]:
    """A device that joined preview, and its tester token."""
    device_id, credential = api.enroll()
    answer = redeem(api, device_id, credential, issue(api, 1)[0])
    return device_id, str(answer.json()["tester_token"])


def test_feedback_votes_surfacing_and_blocking(api: Api) -> None:
    build = new_id("build")
    (_, one_token), (two, two_token), (_, three_token) = (joined_tester(api) for _ in range(3))

    def say(token: str, text: str, **extra: Any) -> httpx.Response:
        body = {"text": text, "build": build, **extra}
        return api.http.post("/api/v1/feedback", json=body, headers=bearer(token))

    first = say(one_token, "Camera app crashes when opening", category="camera")
    assert first.status_code == 201, first.text
    group = first.json()["group_id"]
    assert say(two_token, "camera crashed on open", logs="journal...").json()["group_id"] == group
    other = say(two_token, "wifi drops after resume").json()["group_id"]
    assert other != group
    assert say(one_token, "speaking for another device", device_id=two).status_code == 403
    assert say(one_token, "huge", logs="x" * (64 * 1024 + 1)).status_code == 413

    vote = f"/api/v1/feedback/groups/{other}/vote"
    assert api.http.post(vote, headers=bearer(three_token)).json()["votes"] == 1
    assert api.http.post(vote, headers=bearer(three_token)).status_code == 409
    assert api.http.post(vote, headers=bearer(api.token(Role.VIEWER))).status_code == 403

    viewer = bearer(api.token(Role.VIEWER))
    ranked = api.http.get("/api/v1/feedback/surfacing", params={"build": build}, headers=viewer)
    assert ranked.status_code == 200, ranked.text
    rows = [(g["group_id"], g["devices"], g["votes"]) for g in ranked.json()["groups"]]
    assert rows == [(group, 2, 0), (other, 1, 1)]  # 2*2+1 = 5 over 2*1+1+1 = 4

    engineer = bearer(api.token(Role.RELEASE_ENGINEER))
    blocking = f"/api/v1/feedback/groups/{group}/blocking"
    body = {"blocking": True, "reason": "camera unusable"}
    assert api.http.post(blocking, json=body, headers=bearer(one_token)).status_code == 403
    marked = api.http.post(blocking, json=body, headers=engineer)
    assert marked.status_code == 200, marked.text
    assert marked.json()["blocking"] is True
    close = api.http.post(f"/api/v1/feedback/groups/{other}/close", headers=engineer)
    assert close.json()["closed"] is True
    ranked = api.http.get("/api/v1/feedback/surfacing", params={"build": build}, headers=viewer)
    assert [(g["group_id"], g["blocking"]) for g in ranked.json()["groups"]] == [(group, True)]


def test_a_device_credential_may_send_feedback_but_not_vote(api: Api) -> None:
    _, credential = api.enroll()
    body = {"text": "slow boot", "build": new_id("build")}
    answer = api.http.post("/api/v1/feedback", json=body, headers=bearer(credential))
    assert answer.status_code == 201, answer.text
    vote = f"/api/v1/feedback/groups/{answer.json()['group_id']}/vote"
    assert api.http.post(vote, headers=bearer(credential)).status_code == 403


# ---------------------------------------------------------------------- the ota CLI


def ota(api: Api, token: str, *args: str) -> str:
    env = {"OTA_SERVER_URL": api.url, "OTA_TOKEN": token}
    result = CliRunner().invoke(ota_app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_ota_fcode_and_feedback_commands(api: Api) -> None:
    engineer = api.token(Role.RELEASE_ENGINEER)
    codes = ota(api, engineer, "fcode", "issue", "--count", "2", "--expires", "7d").split()
    assert len(codes) == 2
    assert all(c.startswith("F-") for c in codes)
    row = api.fcode(codes[0])
    assert timedelta(days=6, hours=23) < row.expires_at - utcnow() <= timedelta(days=7)
    device_id, credential = api.enroll()
    token = redeem(api, device_id, credential, codes[1]).json()["tester_token"]
    build = new_id("build")
    posted = api.http.post("/api/v1/feedback", json={"text": "GPS never locks", "build": build},
                           headers=bearer(token))  # fmt: skip
    group = posted.json()["group_id"]
    top = ota(api, engineer, "feedback", "top", "--build", build)
    assert "GPS never locks" in top
    assert "BLOCKING" not in top
    assert f"group {group} blocks build {build}" in ota(
        api, engineer, "feedback", "block", str(group), "--reason", "no navigation"
    )
    assert "[BLOCKING]" in ota(api, engineer, "feedback", "top", "--build", build)
    refused = CliRunner().invoke(ota_app, ["feedback", "block", str(group), "--reason", "x"],
                                 env={"OTA_SERVER_URL": api.url, "OTA_TOKEN": token})  # fmt: skip
    assert refused.exit_code == 1
    assert "HTTP 403" in refused.output


def test_surfacing_is_for_viewers_engineers_and_testers_only(api: Api) -> None:
    path, params = "/api/v1/feedback/surfacing", {"build": new_id("build")}
    assert api.http.get(path, params=params).status_code == 401
    _, credential = api.enroll()
    assert api.http.get(path, params=params, headers=bearer(credential)).status_code == 403
    for role in (Role.VIEWER, Role.RELEASE_ENGINEER, Role.TESTER):
        answer = api.http.get(path, params=params, headers=bearer(api.token(role)))
        assert answer.status_code == 200, role
        assert answer.json()["groups"] == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600)],
)
def test_durations_for_fcode_issue(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "7 days", "-1h", "h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_a_person_with_a_wide_role_reports_for_no_device_unless_named(api: Api) -> None:
    admin = bearer("admin-secret")
    body = {"text": "release notes mention the wrong date", "build": new_id("build")}
    answer = api.http.post("/api/v1/feedback", json=body, headers=admin)
    assert answer.status_code == 201, answer.text
    ghost = api.http.post("/api/v1/feedback", json={**body, "device_id": "ghost"}, headers=admin)
    assert ghost.status_code == 404
