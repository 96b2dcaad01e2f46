"""A device id belongs to the key that enrolled it: over real uvicorn, on SQLite and PostgreSQL.

The fleet's enrollment token alone cannot take an enrolled id over; the old key or an audited
admin reset can. Challenges are single-use and expire; limited enrollment tokens hold to their
uses, lifetime, model and channel; no admin-made token acts as a device.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agent.identity import DeviceKey
from agent.server_api import ServerApi
from lab.processes import live_server
from server.cli import app as ota
from server.settings import Settings
from server.testing import (
    MOSQUITTO_PIPE_LEAK,
    KeyedDevice,
    challenge,
    enroll_keyed,
    new_id,
    sign_in,
    try_enroll,
)
from wire import ENROLL_PATH, device_token_path, poll_path
from wire.paths import (
    ENROLLMENT_TOKENS_PATH,
    TOKENS_PATH,
    device_audit_path,
    device_reset_path,
    enrollment_token_path,
)

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
CHALLENGE_TTL_S = 1.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(db_url: str) -> Iterator[httpx.Client]:
    settings = Settings(
        db_url=db_url,
        admin_token=ADMIN,
        enrollment_token=ENROLL,
        challenge_ttl_s=CHALLENGE_TTL_S,
        broker_url=None,
    )
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        yield client


def polls(api: httpx.Client, device: KeyedDevice) -> int:
    return api.get(poll_path(device.device_id), headers=bearer(device.token)).status_code


def device_row(api: httpx.Client, device_id: str) -> dict[str, Any]:
    rows = api.get("/api/v1/devices", headers=bearer(ADMIN)).json()
    return dict(next(r for r in rows if r["device_id"] == device_id))


# ---------------------------------------------------------------------- taking an id over


def test_the_enrollment_token_alone_cannot_take_an_enrolled_id_over(api: httpx.Client) -> None:
    real = enroll_keyed(api, new_id("phone"), ENROLL, channel="stable")
    thief = KeyedDevice(real.device_id)  # knows the fleet's token, not the device's key
    answer = try_enroll(api, thief, ENROLL, model="other", channel="preview")
    assert answer.status_code == 409
    assert "another key" in answer.json()["detail"]
    assert polls(api, real) == 200  # the real device keeps working
    assert sign_in(api, real).status_code == 200
    row = device_row(api, real.device_id)
    assert (row["model"], row["channel"]) == ("sim", "stable")
    assert sign_in(api, thief).status_code == 401  # and the thief's key buys nothing


def test_reenrolling_with_the_old_key_works_also_for_a_new_key(api: httpx.Client) -> None:
    old = enroll_keyed(api, new_id("phone"), ENROLL)
    old_token = old.token
    new = KeyedDevice(old.device_id)
    assert try_enroll(api, new, ENROLL, channel="preview", previous=old).status_code == 200
    assert polls(api, new) == 200
    assert api.get(poll_path(old.device_id), headers=bearer(old_token)).status_code == 401
    assert sign_in(api, old).status_code == 401  # the old key is the old key now
    assert device_row(api, old.device_id)["channel"] == "preview"


def test_an_admin_reset_is_audited_and_opens_the_id_to_enrollment(api: httpx.Client) -> None:
    lost = enroll_keyed(api, new_id("phone"), ENROLL)
    path = device_reset_path(lost.device_id)
    assert api.post(path, json={"reason": "x"}, headers=bearer(lost.token)).status_code == 403
    assert api.post(path, json={}, headers=bearer(ADMIN)).status_code == 422  # a reason, please
    reset = api.post(path, json={"reason": "board replaced (RMA 1234)"}, headers=bearer(ADMIN))
    assert reset.status_code == 200, reset.text
    assert polls(api, lost) == 401  # the old key's tokens died with it
    replacement = KeyedDevice(lost.device_id)
    assert try_enroll(api, replacement, ENROLL).status_code == 200
    assert polls(api, replacement) == 200
    audit = api.get(device_audit_path(lost.device_id), headers=bearer(ADMIN)).json()
    assert [a["action"] for a in audit] == ["enrolled", "reset", "re-enrolled"]
    assert (audit[1]["actor"], audit[1]["reason"]) == ("admin:admin", "board replaced (RMA 1234)")
    assert audit[1]["detail"]["previous_key"] == lost.public_key
    assert audit[2]["detail"]["key"] == replacement.public_key
    again = KeyedDevice(lost.device_id)  # the reset opened the id once, not for good
    assert try_enroll(api, again, ENROLL).status_code == 409


def test_resetting_an_unknown_device_is_a_404(api: httpx.Client) -> None:
    path = device_reset_path(new_id("ghost"))
    assert api.post(path, json={"reason": "x"}, headers=bearer(ADMIN)).status_code == 404


# ---------------------------------------------------------------------- challenges


def test_a_replayed_challenge_is_refused(api: httpx.Client) -> None:
    device = enroll_keyed(api, new_id("phone"), ENROLL)
    nonce = challenge(api, device.device_id)
    body = device.token_body(nonce)
    assert api.post(device_token_path(device.device_id), json=body).status_code == 200
    replay = api.post(device_token_path(device.device_id), json=body)
    assert replay.status_code == 401
    assert "unknown, used or expired challenge" in replay.json()["detail"]


def test_a_replayed_enrollment_is_refused(api: httpx.Client) -> None:
    device = KeyedDevice(new_id("phone"))
    body = device.enroll_body(challenge(api, device.device_id), ENROLL)
    assert api.post(ENROLL_PATH, json=body).status_code == 200
    assert api.post(ENROLL_PATH, json=body).status_code == 401


def test_an_expired_challenge_is_refused(api: httpx.Client) -> None:
    device = enroll_keyed(api, new_id("phone"), ENROLL)
    nonce = challenge(api, device.device_id)
    time.sleep(CHALLENGE_TTL_S + 0.2)
    answer = api.post(device_token_path(device.device_id), json=device.token_body(nonce))
    assert answer.status_code == 401


def test_a_challenge_is_for_one_device_and_one_key(api: httpx.Client) -> None:
    mine = enroll_keyed(api, new_id("phone"), ENROLL)
    other = enroll_keyed(api, new_id("phone"), ENROLL)
    nonce = challenge(api, mine.device_id)
    stolen = api.post(device_token_path(other.device_id), json=other.token_body(nonce))
    assert stolen.status_code == 401  # another device's nonce
    forged = KeyedDevice(mine.device_id).token_body(challenge(api, mine.device_id))
    assert api.post(device_token_path(mine.device_id), json=forged).status_code == 401
    mismatch = mine.enroll_body(challenge(api, mine.device_id), ENROLL)
    mismatch["proof"] = other.enroll_body(challenge(api, other.device_id), ENROLL)["proof"]
    assert api.post(ENROLL_PATH, json=mismatch).status_code == 401


def test_enrollment_without_a_key_is_refused(api: httpx.Client) -> None:
    body = {"enrollment_token": ENROLL, "device_id": new_id("phone"), "model": "sim",
            "channel": "stable"}  # fmt: skip
    answer = api.post(ENROLL_PATH, json=body)
    assert answer.status_code == 422
    assert "public_key" in answer.json()["detail"]


# ---------------------------------------------------------------------- the agent's client


def test_the_agent_renews_its_token_by_itself(db_url: str) -> None:
    settings = Settings(db_url=db_url, enrollment_token=ENROLL, device_token_ttl_s=1.0)
    with live_server(settings) as url:
        device = ServerApi(url, new_id("phone"), DeviceKey.generate())
        device.enroll(ENROLL, "sim", "stable")
        first = device.access_token()
        time.sleep(1.2)  # expired: the next call signs a fresh challenge first
        assert device.poll().notice is None
        assert device.access_token() != first


# ---------------------------------------------------------------------- device ids


@pytest.mark.parametrize(
    "device_id",
    ["Phone-1", "phone_1/x", "-phone", ".", "..", "$sys", "admin", "ota-server", "a" * 64, "p h"],
)
def test_device_ids_outside_the_one_rule_are_refused(api: httpx.Client, device_id: str) -> None:
    device = KeyedDevice(device_id)
    body = device.enroll_body("nonce", ENROLL)
    assert api.post(ENROLL_PATH, json=body).status_code == 422


def test_the_servers_own_broker_user_is_no_device_id(db_url: str) -> None:
    settings = Settings(
        db_url=db_url, enrollment_token=ENROLL, broker_url="mqtt://fleet-hub:pw@127.0.0.1:9"
    )
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        answer = try_enroll(client, KeyedDevice("fleet-hub"), ENROLL)
        assert answer.status_code == 422
        assert "reserved" in answer.json()["detail"]


# ---------------------------------------------------------------------- enrollment tokens


def make_token(api: httpx.Client, **limits: Any) -> str:
    body = {"name": new_id("batch"), "expires_in_s": 3600, **limits}
    answer = api.post(ENROLLMENT_TOKENS_PATH, json=body, headers=bearer(ADMIN))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def test_a_limited_token_holds_to_its_count(api: httpx.Client) -> None:
    token = make_token(api, max_uses=2)
    assert try_enroll(api, KeyedDevice(new_id("phone")), token).status_code == 200
    assert try_enroll(api, KeyedDevice(new_id("phone")), token).status_code == 200
    third = try_enroll(api, KeyedDevice(new_id("phone")), token)
    assert third.status_code == 403
    assert "used up" in third.json()["detail"]


def test_a_limited_token_holds_to_its_model_and_channel(api: httpx.Client) -> None:
    token = make_token(api, model="rpi4", channel="internal")
    wrong_model = try_enroll(api, KeyedDevice(new_id("phone")), token, "sim", "internal")
    assert wrong_model.status_code == 403
    assert "model 'rpi4'" in wrong_model.json()["detail"]
    wrong_channel = try_enroll(api, KeyedDevice(new_id("phone")), token, "rpi4", "stable")
    assert wrong_channel.status_code == 403
    assert try_enroll(api, KeyedDevice(new_id("phone")), token, "rpi4", "internal").is_success


def test_an_expired_or_revoked_token_is_refused(api: httpx.Client) -> None:
    expiring = make_token(api, expires_in_s=0.5)
    time.sleep(0.7)
    answer = try_enroll(api, KeyedDevice(new_id("phone")), expiring)
    assert answer.status_code == 403
    assert "expired" in answer.json()["detail"]
    name = new_id("batch")
    made = api.post(
        ENROLLMENT_TOKENS_PATH, json={"name": name, "expires_in_s": 60}, headers=bearer(ADMIN)
    ).json()
    assert api.delete(enrollment_token_path(name), headers=bearer(ADMIN)).status_code == 200
    assert try_enroll(api, KeyedDevice(new_id("phone")), made["token"]).status_code == 403
    listed = {t["name"]: t for t in api.get(ENROLLMENT_TOKENS_PATH, headers=bearer(ADMIN)).json()}
    assert listed[name]["revoked_at"] is not None
    assert "token" not in listed[name]


# ---------------------------------------------------------------------- no token is a device


def test_an_admin_cannot_mint_a_token_that_acts_as_a_device(api: httpx.Client) -> None:
    device = enroll_keyed(api, new_id("phone"), ENROLL)
    body = {"role": "device", "name": new_id("fake"), "subject": device.device_id}
    answer = api.post(TOKENS_PATH, json=body, headers=bearer(ADMIN))
    assert answer.status_code == 422
    assert "no token acts as a device" in answer.text


def test_the_cli_resets_devices_and_manages_enrollment_tokens(api: httpx.Client) -> None:
    runner = CliRunner()
    env = {"OTA_SERVER_URL": str(api.base_url), "OTA_TOKEN": ADMIN}
    name = new_id("line-3")
    args = ["enroll-token", "create", "--name", name, "--uses", "1", "--model", "sim"]
    made = runner.invoke(ota, args, env=env)
    assert made.exit_code == 0, made.output
    device = KeyedDevice(new_id("phone"))
    assert try_enroll(api, device, made.output.strip()).status_code == 200
    listed = runner.invoke(ota, ["enroll-token", "list", "--json"], env=env)
    assert f'"name": "{name}"' in listed.output
    assert '"uses": 1' in listed.output
    assert runner.invoke(ota, ["enroll-token", "revoke", name], env=env).exit_code == 0
    reset = runner.invoke(ota, ["device", "reset", device.device_id, "--reason", "RMA"], env=env)
    assert reset.exit_code == 0, reset.output
    assert polls(api, device) == 401
    audit = runner.invoke(ota, ["device", "audit", device.device_id, "--json"], env=env)
    assert '"reason": "RMA"' in audit.output


def test_the_cli_mints_no_device_token(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ota.db'}"
    args = ["token", "create", "--role", "device", "--name", "fake", "--db-url", db]
    answer = CliRunner().invoke(ota, args)
    assert answer.exit_code == 1
    assert "no token acts as a device" in answer.output


def test_the_dashboard_join_form_takes_a_device_access_token(api: httpx.Client) -> None:
    device = enroll_keyed(api, new_id("phone"), ENROLL)
    codes = api.post("/api/v1/fcodes", json={"count": 1, "expires_in_s": 60}, headers=bearer(ADMIN))
    (code,) = codes.json()["codes"]
    form = {"device_id": device.device_id, "credential": "made-up", "code": code}
    assert api.post("/testers/join", data=form).status_code == 401
    joined = api.post("/testers/join", data={**form, "credential": device.token})
    assert joined.status_code == 200, joined.text
    assert device_row(api, device.device_id)["channel"] == "preview"
