"""Tokens and roles: the service functions on a real database, the token admin API over real
uvicorn, the dashboard's sign-in, and the `ota token` / `ota broker mosquitto-config`
commands, down to a real mosquitto admitting an enrolled device with its credential."""

from __future__ import annotations

import getpass
import json
import queue
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from conftest import IN_CI
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from lab.net import free_port
from lab.processes import live_server, mosquitto, mosquitto_binary
from server.auth import (
    DEFAULT_TOKEN_LIFETIME,
    MAX_TOKEN_LIFETIME,
    Principal,
    Role,
    authorize,
    issue_token,
    list_tokens,
    require_device_self,
    resolve_principal,
    revoke_token,
)
from server.cli import app as ota
from server.db import make_engine, make_sessions, upgrade_to_head
from server.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotAuthenticatedError,
)
from server.models import ApiToken, Device, utcnow
from server.mosquitto import verify_password
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK, dashboard_client, new_id
from wire import API_PREFIX, ENROLL_PATH, poll_path

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
TOKENS = f"{API_PREFIX}/tokens"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'ota.db'}")
    upgrade_to_head(engine)
    try:
        with make_sessions(engine)() as s:
            yield s
    finally:
        engine.dispose()


# ---------------------------------------------------------------------- the service


def test_a_token_is_stored_hashed_and_resolves_to_its_role(session: Session) -> None:
    token = issue_token(session, role=Role.VIEWER, subject="dana", name="dana")
    session.commit()
    row = session.scalars(select(ApiToken)).one()
    assert token not in (row.token_hash, row.name, row.subject)
    assert len(row.token_hash) == 64
    assert resolve_principal(session, Settings(), token) == Principal(Role.VIEWER, "dana")
    assert resolve_principal(session, Settings(), token + "x") is None
    assert resolve_principal(session, Settings(), "") is None


def test_the_settings_admin_token_is_admin_and_an_empty_one_is_no_token(
    session: Session,
) -> None:
    assert resolve_principal(session, Settings(admin_token=ADMIN), ADMIN) == Principal(
        Role.ADMIN, "admin"
    )
    assert resolve_principal(session, Settings(admin_token=""), "") is None


def test_revoking_stops_a_token_and_reissuing_rotates_it(session: Session) -> None:
    first = issue_token(session, role=Role.TESTER, subject="phone-1", name="tester phone-1")
    second = issue_token(session, role=Role.TESTER, subject="phone-1", name="tester phone-1")
    session.commit()
    assert resolve_principal(session, Settings(), first) is None  # rotated away
    assert resolve_principal(session, Settings(), second) == Principal(Role.TESTER, "phone-1")
    with pytest.raises(ConflictError, match="exists already"):
        issue_token(session, role=Role.ADMIN, subject="mallory", name="tester phone-1")
    session.rollback()
    assert revoke_token(session, "tester phone-1")
    assert not revoke_token(session, "tester phone-1")  # already revoked
    assert resolve_principal(session, Settings(), second) is None
    for role, subject in ((Role.VIEWER, "v"), (Role.TESTER, "phone-1")):  # not even its own
        with pytest.raises(ConflictError, match=r"revoked .* never reused"):
            issue_token(session, role=role, subject=subject, name="tester phone-1")
        session.rollback()
    assert resolve_principal(session, Settings(), second) is None


def test_a_revoked_tokens_row_is_never_rewritten(session: Session) -> None:
    issue_token(session, role=Role.RELEASE_ENGINEER, subject="erin", name="ci")
    session.commit()
    assert revoke_token(session, "ci")
    (before,) = list_tokens(session)
    with pytest.raises(ConflictError):
        issue_token(session, role=Role.ADMIN, subject="mallory", name="ci")
    session.rollback()
    assert list_tokens(session) == [before]
    assert (before.role, before.revoked_at is not None) == (Role.RELEASE_ENGINEER, True)


def test_a_token_expires_and_says_so(session: Session) -> None:
    day = timedelta(days=1)
    then = utcnow() - 2 * day
    token = issue_token(session, role=Role.VIEWER, subject="v", name="v", lifetime=day, now=then)
    session.commit()
    assert resolve_principal(session, Settings(), token, now=then + day / 2) == Principal(
        Role.VIEWER, "v"
    )
    with pytest.raises(NotAuthenticatedError, match="expired at"):
        resolve_principal(session, Settings(), token)
    (row,) = list_tokens(session)
    assert row.expires_at == then + day
    for wrong in (timedelta(0), -day, MAX_TOKEN_LIFETIME + day):
        with pytest.raises(InvalidInputError):
            issue_token(session, role=Role.VIEWER, subject="w", name="w", lifetime=wrong)
    default = issue_token(session, role=Role.VIEWER, subject="d", name="d")
    session.commit()
    assert resolve_principal(session, Settings(), default) is not None
    (row,) = [t for t in list_tokens(session) if t.name == "d"]
    assert row.expires_at - row.created_at == DEFAULT_TOKEN_LIFETIME


def test_a_tokens_last_use_is_written_at_most_once_a_minute(session: Session) -> None:
    token = issue_token(session, role=Role.VIEWER, subject="v", name="v")
    session.commit()
    assert list_tokens(session)[0].last_used_at is None
    first = utcnow()
    for seconds in (0, 10, 59):
        resolve_principal(session, Settings(), token, now=first + timedelta(seconds=seconds))
    assert list_tokens(session)[0].last_used_at == first
    resolve_principal(session, Settings(), token, now=first + timedelta(seconds=61))
    assert list_tokens(session)[0].last_used_at == first + timedelta(seconds=61)


def test_authorize_lets_admin_everywhere_and_names_the_roles_allowed() -> None:
    allowed = frozenset({Role.RELEASE_ENGINEER})
    admin = Principal(Role.ADMIN, "admin")
    assert authorize(admin, allowed) is admin
    assert authorize(admin, frozenset()) is admin
    with pytest.raises(NotAuthenticatedError):
        authorize(None, allowed)
    with pytest.raises(ForbiddenError, match="admin, release_engineer; yours is viewer"):
        authorize(Principal(Role.VIEWER, "v"), allowed)


def test_a_device_bound_principal_acts_only_for_its_own_device() -> None:
    for role in (Role.DEVICE, Role.TESTER):
        mine = Principal(role, "phone-1")
        assert require_device_self("phone-1", mine) is mine
        with pytest.raises(ForbiddenError, match="phone-2"):
            require_device_self("phone-2", mine)
    viewer = Principal(Role.VIEWER, "v")
    assert require_device_self("phone-2", viewer) is viewer


# ---------------------------------------------------------------------- the API


@pytest.fixture
def api(db_url: str) -> Iterator[httpx.Client]:
    settings = Settings(db_url=db_url, admin_token=ADMIN, enrollment_token=ENROLL)
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        yield client


def _enroll(client: httpx.Client, device_id: str) -> str:
    body = {"enrollment_token": ENROLL, "device_id": device_id, "model": "sim",
            "channel": "stable"}  # fmt: skip
    answer = client.post(ENROLL_PATH, json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["credential"])


def test_token_admin_api_issues_lists_without_secrets_and_revokes(api: httpx.Client) -> None:
    name = new_id("ci")
    made = api.post(TOKENS, json={"role": "release_engineer", "name": name}, headers=bearer(ADMIN))
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert (made.json()["name"], made.json()["role"]) == (name, "release_engineer")
    assert api.get(f"{API_PREFIX}/devices", headers=bearer(token)).status_code == 200
    listed = api.get(TOKENS, headers=bearer(ADMIN))
    assert listed.status_code == 200
    assert token not in listed.text
    assert "token_hash" not in listed.text
    (row,) = [t for t in listed.json() if t["name"] == name]
    assert (row["role"], row["subject"], row["revoked_at"]) == ("release_engineer", name, None)
    # the release engineer cannot mint tokens, and a name cannot be taken over
    assert api.get(TOKENS, headers=bearer(token)).status_code == 403
    body = {"role": "admin", "name": name}
    assert api.post(TOKENS, json=body, headers=bearer(ADMIN)).status_code == 409
    assert api.delete(f"{TOKENS}/{name}", headers=bearer(ADMIN)).status_code == 200
    assert api.get(f"{API_PREFIX}/devices", headers=bearer(token)).status_code == 401
    assert api.delete(f"{TOKENS}/{name}", headers=bearer(ADMIN)).status_code == 404
    bad = api.post(TOKENS, json={"role": "root", "name": "x"}, headers=bearer(ADMIN))
    assert bad.status_code == 422


def test_an_admin_api_token_is_as_good_as_the_settings_one(api: httpx.Client) -> None:
    made = api.post(TOKENS, json={"role": "admin", "name": new_id("ops")}, headers=bearer(ADMIN))
    second_admin = made.json()["token"]
    body = {"role": "viewer", "name": new_id("v")}
    assert api.post(TOKENS, json=body, headers=bearer(second_admin)).status_code == 201


def test_the_dashboard_signs_in_with_a_form_never_a_token_in_the_url(api: httpx.Client) -> None:
    made = api.post(TOKENS, json={"role": "viewer", "name": new_id("wall")}, headers=bearer(ADMIN))
    viewer = made.json()["token"]
    in_url = api.get("/fleet", params={"token": viewer})
    assert in_url.status_code == 303
    assert in_url.headers["location"] == "/signin?next=/fleet"
    with dashboard_client(str(api.base_url), viewer) as web:
        assert web.signin_status == 303
        page = web.get("/fleet")
    assert page.status_code == 200
    assert "Orange Friday" in page.text
    phone = new_id("phone")
    credential = _enroll(api, phone)
    with dashboard_client(str(api.base_url), credential) as web:
        assert web.signin_status == 403
    with dashboard_client(str(api.base_url), "nope") as web:
        assert web.signin_status == 401


def test_a_tester_token_bound_to_a_device_cannot_poll_for_it(api: httpx.Client) -> None:
    phone = new_id("phone")
    credential = _enroll(api, phone)
    body = {"role": "tester", "name": new_id("t"), "subject": phone}
    tester = api.post(TOKENS, json=body, headers=bearer(ADMIN)).json()["token"]
    assert api.get(poll_path(phone), headers=bearer(credential)).status_code == 200
    refused = api.get(poll_path(phone), headers=bearer(tester))
    assert refused.status_code == 403
    assert "only device" in refused.json()["detail"]
    assert api.get(poll_path(phone), headers=bearer(ADMIN)).status_code == 403


def test_an_expired_token_is_refused_with_its_date(api: httpx.Client, db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with make_sessions(engine)() as session:
            old = utcnow() - timedelta(days=2)
            token = issue_token(session, role=Role.VIEWER, subject="old", name=new_id("old"),
                                lifetime=timedelta(days=1), now=old)  # fmt: skip
            session.commit()
    finally:
        engine.dispose()
    answer = api.get(f"{API_PREFIX}/devices", headers=bearer(token))
    assert answer.status_code == 401
    assert "expired at" in answer.json()["detail"]
    body = {"role": "viewer", "name": new_id("short"), "expires_in_s": 60}
    made = api.post(TOKENS, json=body, headers=bearer(ADMIN))
    assert made.status_code == 201, made.text
    expires_at = datetime.fromisoformat(made.json()["expires_at"])
    assert timedelta(seconds=50) < expires_at - utcnow() <= timedelta(seconds=60)
    body = {"role": "viewer", "name": new_id("long"), "expires_in_s": 500 * 86400}
    assert api.post(TOKENS, json=body, headers=bearer(ADMIN)).status_code == 422


# ---------------------------------------------------------------------- the CLI


def test_ota_token_create_list_revoke_work_on_the_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ota.db'}"
    runner = CliRunner()
    made = runner.invoke(
        ota, ["token", "create", "--role", "viewer", "--name", "wall", "--db-url", db]
    )
    assert made.exit_code == 0, made.output
    token = made.output.strip()
    with live_server(Settings(db_url=db)) as url, httpx.Client(base_url=url) as client:
        assert client.get(f"{API_PREFIX}/devices", headers=bearer(token)).status_code == 200
        listed = runner.invoke(ota, ["token", "list", "--db-url", db])
        assert listed.exit_code == 0, listed.output
        assert "wall\tviewer\twall\t" in listed.output
        assert token not in listed.output
        revoked = runner.invoke(ota, ["token", "revoke", "wall", "--db-url", db])
        assert revoked.exit_code == 0, revoked.output
        assert client.get(f"{API_PREFIX}/devices", headers=bearer(token)).status_code == 401
    again = runner.invoke(ota, ["token", "revoke", "wall", "--db-url", db])
    assert again.exit_code == 1
    bad = runner.invoke(ota, ["token", "create", "--role", "root", "--name", "x", "--db-url", db])
    assert bad.exit_code != 0


def test_ota_token_create_takes_a_lifetime_and_list_shows_it(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ota.db'}"
    runner = CliRunner()
    create = ["token", "create", "--role", "viewer", "--db-url", db, "--name"]
    made = runner.invoke(ota, [*create, "wall", "--expires", "30d"])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(ota, ["token", "list", "--json", "--db-url", db])
    (row,) = json.loads(listed.output)
    lifetime = datetime.fromisoformat(row["expires_at"]) - datetime.fromisoformat(row["created_at"])
    assert (lifetime, row["last_used_at"]) == (timedelta(days=30), None)
    assert "active until" in runner.invoke(ota, ["token", "list", "--db-url", db]).output
    too_long = runner.invoke(ota, [*create, "forever", "--expires", "500d"])
    assert too_long.exit_code == 1
    assert "at most" in too_long.output
    assert runner.invoke(ota, ["token", "revoke", "wall", "--db-url", db]).exit_code == 0
    reused = runner.invoke(ota, [*create, "wall"])
    assert reused.exit_code == 1
    assert "never reused" in reused.output


def _connack(port: int, ca: Path, username: str, password: str) -> ReasonCode:
    answers: queue.Queue[ReasonCode] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username)
    client.username_pw_set(username, password)
    client.tls_set(ca_certs=str(ca))
    client.on_connect = lambda _c, _u, _f, rc, _p: answers.put(rc)
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        return answers.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_broker_config_from_the_registry_admits_enrolled_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = mosquitto_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("mosquitto binary not found (CI=true)")
        pytest.skip("mosquitto binary not found")
    db = f"sqlite:///{tmp_path / 'ota.db'}"
    phone = new_id("phone")
    with (
        live_server(Settings(db_url=db, enrollment_token=ENROLL)) as url,
        httpx.Client(base_url=url) as client,
    ):
        credential = _enroll(client, phone)
    engine = make_engine(db)
    with make_sessions(engine)() as s:
        stored = s.get_one(Device, phone).broker_password_hash
    engine.dispose()
    assert stored is not None
    assert verify_password(credential, stored)
    port = free_port()
    monkeypatch.setenv("OTA_TEST_BROKER_PW", "server-pw")
    args = ["broker", "mosquitto-config", str(tmp_path / "broker"), "--db-url", db,
            "--port", str(port), "--hostname", "localhost", "--run-as-user", getpass.getuser(),
            "--server-password-env", "OTA_TEST_BROKER_PW"]  # fmt: skip
    written = CliRunner().invoke(ota, args)
    assert written.exit_code == 0, written.output
    assert "1 device logins" in written.output
    conf_dir = tmp_path / "broker"
    assert f"{phone}:{stored}" in (conf_dir / "passwd").read_text()
    assert f"user {phone}\n" in (conf_dir / "acl").read_text()
    with mosquitto(binary, conf_dir / "mosquitto.conf", port, tmp_path / "mosquitto.log"):
        ca = conf_dir / "ca.crt"
        assert not _connack(port, ca, phone, credential).is_failure
        assert _connack(port, ca, phone, credential + "x").is_failure


def test_broker_config_needs_the_server_password(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ota.db'}"
    args = ["broker", "mosquitto-config", str(tmp_path / "b"), "--db-url", db,
            "--server-password-env", "OTA_TEST_UNSET_PW_X"]  # fmt: skip
    answer = CliRunner().invoke(ota, args)
    assert answer.exit_code == 1
    assert not (tmp_path / "b").exists()
