"""The HTTP API over real uvicorn, on SQLite and on PostgreSQL.

One server per backend serves this whole module (starting one costs more than most tests), so
every test names its own devices and channels; tests that need an empty database use the
`db_url` fixture and a server of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.errors import TransportError
from agent.identity import DeviceKey
from agent.server_api import ServerApi
from lab.processes import live_server
from server.settings import Settings
from server.testing import (
    MOSQUITTO_PIPE_LEAK,
    dashboard_client,
    enroll_keyed,
    new_id,
    sample_release,
    sample_report,
    try_enroll,
)
from wire import (
    ENROLL_PATH,
    CommandAck,
    PollAnswer,
    ReportsAck,
    UpdateState,
    command_ack_path,
    poll_path,
    reports_path,
)

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing


@pytest.fixture(scope="module")
def api(shared_db_url: str) -> Iterator[httpx.Client]:
    settings = Settings(db_url=shared_db_url, admin_token=ADMIN, enrollment_token=ENROLL)
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        yield client


def enroll(api: httpx.Client, device_id: str, channel: str = "stable", model: str = "sim") -> str:
    """Enroll with a new key of the device's own; returns its access token."""
    return enroll_keyed(api, device_id, ENROLL, model, channel).token


def auth(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def report(device_id: str, seq: int, state: UpdateState = UpdateState.DOWNLOADING) -> Any:
    return sample_report(device_id, seq, state).to_dict()


def poll(api: httpx.Client, device_id: str, credential: str) -> PollAnswer:
    answer = api.get(poll_path(device_id), headers=auth(credential))
    assert answer.status_code == 200, answer.text
    return PollAnswer.from_json(answer.content)


def admin_get(api: httpx.Client, path: str, **params: Any) -> Any:
    answer = api.get(path, params=params, headers=ADMIN_AUTH)
    assert answer.status_code == 200, answer.text
    return answer.json()


def reports_held(api: httpx.Client, device_id: str) -> list[dict[str, Any]]:
    return list(admin_get(api, "/api/v1/reports", device_id=device_id))


def device_row(api: httpx.Client, device_id: str) -> dict[str, Any] | None:
    rows = admin_get(api, "/api/v1/devices")
    return next((r for r in rows if r["device_id"] == device_id), None)


def post_release(api: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return api.post("/api/v1/releases", json=body, headers=ADMIN_AUTH)


# ---------------------------------------------------------------------- enrollment and auth


def test_enrolled_device_polls_nothing_before_any_release(api: httpx.Client) -> None:
    phone = new_id("phone")
    credential = enroll(api, phone, channel=new_id("ch"))
    answer = poll(api, phone, credential)
    assert answer.notice is None
    assert answer.commands == ()
    row = device_row(api, phone)
    assert row is not None
    assert row["last_seen"] is not None
    assert row["silent"] is False


def test_enrollment_refuses_a_bad_token_and_a_bad_device_id(api: httpx.Client) -> None:
    phone = new_id("phone")
    body = {"enrollment_token": "wrong", "device_id": phone, "model": "sim", "channel": "stable"}
    answer = api.post(ENROLL_PATH, json=body)
    assert answer.status_code == 403
    assert "invalid enrollment token" in answer.json()["detail"]
    assert device_row(api, phone) is None
    for field, bad in (("device_id", "a/b"), ("channel", "#"), ("model", "")):
        answer = api.post(ENROLL_PATH, json={**body, "enrollment_token": ENROLL, field: bad})
        assert answer.status_code == 422, field
    assert device_row(api, phone) is None


def test_reenrolling_with_the_devices_key_rotates_its_token(api: httpx.Client) -> None:
    phone = new_id("phone")
    device = enroll_keyed(api, phone, ENROLL)
    old = device.token
    assert try_enroll(api, device, ENROLL, channel="preview").status_code == 200
    new = device.token
    assert old != new
    assert api.get(poll_path(phone), headers=auth(old)).status_code == 401
    poll(api, phone, new)
    assert (device_row(api, phone) or {})["channel"] == "preview"


def test_a_device_polls_and_reports_only_as_itself(api: httpx.Client) -> None:
    me, other = new_id("phone"), new_id("phone")
    mine = enroll(api, me)
    enroll(api, other)
    missing = api.get(poll_path(me))
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert api.get(poll_path(me), headers={"Authorization": "Basic abc"}).status_code == 401
    assert api.get(poll_path(me), headers=auth("made-up")).status_code == 401
    theirs = api.get(poll_path(other), headers=auth(mine))
    assert theirs.status_code == 403
    assert other in theirs.json()["detail"]
    posted = api.post(reports_path(other), json=[report(other, 0)], headers=auth(mine))
    assert posted.status_code == 403
    assert reports_held(api, other) == []


def test_admin_endpoints_need_the_admin_token(api: httpx.Client) -> None:
    for path in ("/api/v1/devices", "/api/v1/releases", "/api/v1/reports"):
        assert api.get(path).status_code == 401, path
        assert api.get(path, headers=auth("nope")).status_code == 401, path  # unknown token
    for headers in ({}, auth("nope")):  # the dashboard: to its sign-in form, whatever the header
        assert api.get("/", headers=headers).headers["location"] == "/signin"
    channel = new_id("ch")
    assert api.post("/api/v1/releases", json=sample_release("1", 1, channel)).status_code == 401
    phone = new_id("phone")
    credential = enroll(api, phone)
    assert api.get("/api/v1/devices", headers=auth(credential)).status_code == 403
    command = api.post(f"/api/v1/devices/{phone}/commands", json={"kind": "cancel"})
    assert command.status_code == 401
    assert poll(api, phone, credential).commands == ()
    assert not [r for r in admin_get(api, "/api/v1/releases") if r["channel"] == channel]


def test_switched_off_tokens_refuse_everything(db_url: str) -> None:
    with (
        live_server(Settings(db_url=db_url)) as url,
        httpx.Client(base_url=url, timeout=20) as client,
    ):
        body = {"enrollment_token": "", "device_id": "x", "model": "sim", "channel": "stable"}
        answer = client.post(ENROLL_PATH, json=body)
        assert answer.status_code == 403
        assert "switched off" in answer.json()["detail"]
        assert client.get("/api/v1/devices", headers=auth("any")).status_code == 401


# ---------------------------------------------------------------------- releases


def test_the_latest_release_of_a_channel_and_model_is_what_devices_poll(
    api: httpx.Client,
) -> None:
    stable, preview, model = new_id("stable"), new_id("preview"), new_id("model")
    phone, tester, board = new_id("phone"), new_id("tester"), new_id("board")
    on_stable = enroll(api, phone, stable, model)
    on_preview = enroll(api, tester, preview, model)
    other_model = enroll(api, board, stable, "rpi4")
    created = [
        post_release(api, sample_release(v, c, stable, model)) for v, c in (("47", 2), ("46", 1))
    ]
    assert [r.status_code for r in created] == [201, 201]
    newest = created[0].json()
    assert len(newest["rollout_id"]) == 32
    notice = poll(api, phone, on_stable).notice
    assert notice is not None
    assert (notice.release_version, notice.rollout_id) == ("47", newest["rollout_id"])
    assert (notice.channel, notice.model) == (stable, model)
    assert (notice.percentage, notice.paused) == (100.0, False)
    assert notice.target_path == f"{model}/{stable}/47/rom.img"
    assert notice.notes == "build 47"
    assert poll(api, tester, on_preview).notice is None
    assert poll(api, board, other_model).notice is None
    listed = [r for r in admin_get(api, "/api/v1/releases") if r["channel"] == stable]
    assert [(r["version"], r["percentage"]) for r in listed] == [("47", 100.0), ("46", 100.0)]


def test_a_release_is_registered_once(api: httpx.Client) -> None:
    channel = new_id("ch")
    assert post_release(api, sample_release("1.0", 1, channel)).status_code == 201
    again = post_release(api, sample_release("1.0", 1, channel))
    assert again.status_code == 409
    assert "exists already" in again.json()["detail"]
    assert post_release(api, sample_release("1.0", 1, new_id("ch"))).status_code == 201


INVALID_RELEASE_FIELDS = [
    ("sha256", "xyz"),
    ("target_path", "../etc/passwd"),
    ("target_path", "/abs/rom.img"),
    ("length", -1),
    ("channel", "a/b"),
    ("version", ""),
    ("release_counter", "soon"),
]


def test_an_invalid_release_is_refused_and_nothing_stored(api: httpx.Client) -> None:
    channel = new_id("ch")
    for field, value in INVALID_RELEASE_FIELDS:
        body = {**sample_release("1.0", 1, channel), field: value}
        answer = post_release(api, body)
        assert answer.status_code == 422, field
        assert field in str(answer.json()["detail"])
    assert not [r for r in admin_get(api, "/api/v1/releases") if r["channel"] == channel]


# ---------------------------------------------------------------------- reports


def test_reports_are_stored_once_and_every_copy_is_acked(api: httpx.Client) -> None:
    phone = new_id("phone")
    credential = enroll(api, phone)
    path, headers = reports_path(phone), auth(credential)
    first = api.post(path, json=[report(phone, 0), report(phone, 1)], headers=headers)
    assert ReportsAck.from_json(first.content).acked == (0, 1)
    batch = [report(phone, 1), report(phone, 1), report(phone, 2, UpdateState.INSTALLED)]
    again = api.post(path, json=batch, headers=headers)
    assert again.status_code == 200
    assert ReportsAck.from_json(again.content).acked == (1, 2)
    assert sorted(r["seq"] for r in reports_held(api, phone)) == [0, 1, 2]
    straggler = api.post(path, json=[report(phone, 0)], headers=headers)
    assert ReportsAck.from_json(straggler.content).acked == (0,)
    # a *different* report under a stored seq is a conflict, no longer a silent drop
    conflict = api.post(path, json=[report(phone, 0, UpdateState.FAILED)], headers=headers)
    assert conflict.status_code == 409
    assert ReportsAck.from_json(api.post(path, json=[], headers=headers).content).acked == ()
    row = device_row(api, phone) or {}
    assert (row["state"], row["current_version"], row["slot"], row["last_seq"]) == (
        "installed",
        "2026.46",
        "a",
        2,
    )
    assert row["last_report_at"] is not None


def invalid_batches(phone: str) -> list[tuple[Any, str]]:
    good = report(phone, 5)
    return [
        ("not a list", "JSON list"),
        ([{"v": 1, "device_id": phone, "seq": 0}], "report 0"),
        ([good, {**report(phone, 6), "seq": -1}], "report 1: seq"),
        ([good, report("someone-else", 6)], f"not {phone!r}"),
        ([good, {**report(phone, 6), "state": "exploded"}], "exploded"),
        ([good, {**report(phone, 6), "v": 2}], "report 1: unsupported protocol version"),
        ([good, ["not", "an", "object"]], "report 1: not a JSON object"),
    ]


def test_an_invalid_batch_is_refused_whole(api: httpx.Client) -> None:
    phone = new_id("phone")
    credential = enroll(api, phone)
    for body, says in invalid_batches(phone):
        answer = api.post(reports_path(phone), json=body, headers=auth(credential))
        assert answer.status_code == 422, body
        assert says in answer.json()["detail"]
    headers = {**auth(credential), "Content-Type": "application/json"}
    assert api.post(reports_path(phone), content=b"[{", headers=headers).status_code == 422
    assert reports_held(api, phone) == []
    assert (device_row(api, phone) or {})["state"] == ""


def test_reports_list_filters_and_limits(api: httpx.Client) -> None:
    phones = [new_id("phone"), new_id("phone")]
    for phone in phones:
        credential = enroll(api, phone)
        batch = [report(phone, seq) for seq in range(5)]
        api.post(reports_path(phone), json=batch, headers=auth(credential))
    everything = admin_get(api, "/api/v1/reports", limit=10_000)
    assert len([r for r in everything if r["device_id"] in phones]) == 10
    newest = admin_get(api, "/api/v1/reports", device_id=phones[1], limit=2)
    assert [(r["device_id"], r["seq"], r["via"]) for r in newest] == [
        (phones[1], 4, "http"),
        (phones[1], 3, "http"),
    ]
    too_few = api.get("/api/v1/reports", params={"limit": 0}, headers=ADMIN_AUTH)
    assert too_few.status_code == 422


# ---------------------------------------------------------------------- commands and dashboard


def test_a_command_is_delivered_until_the_device_acks_it(api: httpx.Client) -> None:
    phone = new_id("phone")
    credential = enroll(api, phone)
    body = {"kind": "rollback", "args": {"why": "bad build"}}
    sent = api.post(f"/api/v1/devices/{phone}/commands", json=body, headers=ADMIN_AUTH)
    assert sent.status_code == 201
    commands = poll(api, phone, credential).commands
    assert [(c.command_id, c.kind.value, c.args) for c in commands] == [
        (sent.json()["command_id"], "rollback", {"why": "bad build"})
    ]
    assert poll(api, phone, credential).commands == commands  # not acknowledged yet
    ack = CommandAck((commands[0].command_id,)).to_dict()
    assert api.post(command_ack_path(phone), json=ack, headers=auth(credential)).status_code == 200
    assert poll(api, phone, credential).commands == ()


def test_commands_need_a_known_device_and_a_known_kind(api: httpx.Client) -> None:
    phone = new_id("phone")
    enroll(api, phone)
    ghost = new_id("ghost")
    unknown = api.post(
        f"/api/v1/devices/{ghost}/commands", json={"kind": "cancel"}, headers=ADMIN_AUTH
    )
    assert unknown.status_code == 404
    assert ghost in unknown.json()["detail"]
    bad = api.post(
        f"/api/v1/devices/{phone}/commands", json={"kind": "explode"}, headers=ADMIN_AUTH
    )
    assert bad.status_code == 422


def test_the_dashboard_shows_devices_and_releases(api: httpx.Client) -> None:
    phone, channel = new_id("phone"), new_id("ch<b>")  # device ids cannot hold markup
    credential = enroll(api, phone, channel)
    committed = [report(phone, 0, UpdateState.COMMITTED)]
    api.post(reports_path(phone), json=committed, headers=auth(credential))
    post_release(api, sample_release("2026.48", 3, new_id("ch")))
    with dashboard_client(str(api.base_url), ADMIN) as web:
        assert web.signin_status == 303
        page = web.get("/fleet")
        releases = web.get("/rollouts")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert phone in page.text
    assert channel.replace("<b>", "&lt;b&gt;") in page.text
    assert '<tr class="state-committed">' in page.text
    assert "2026.48" in releases.text
    assert api.get("/fleet", headers=ADMIN_AUTH).status_code == 303  # a cookie, not a header


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "OTA_DB_URL": "sqlite:///x.db",
        "OTA_REPO_DIR": str(tmp_path),
        "OTA_BROKER_URL": "mqtt://127.0.0.1:1884",
        "OTA_ADMIN_TOKEN": "a",
        "OTA_ENROLLMENT_TOKEN": "e",
        "OTA_REPORT_TIMEOUT_S": "60",
        "OTA_MAX_BODY_BYTES": "2048",
        "OTA_BROKER_CA": str(tmp_path / "ca.crt"),
    }
    settings = Settings.from_env(env)
    assert (settings.db_url, settings.repo_dir, settings.broker_url) == (
        "sqlite:///x.db",
        tmp_path,
        "mqtt://127.0.0.1:1884",
    )
    assert (settings.admin_token, settings.enrollment_token, settings.report_timeout_s) == (
        "a",
        "e",
        60.0,
    )
    assert settings.max_body_bytes == 2048
    assert settings.broker_ca == tmp_path / "ca.crt"
    assert Settings.from_env({}) == Settings()


def test_the_agents_own_client_speaks_to_this_server(api: httpx.Client) -> None:
    """The wire contract end to end: agent.server_api against the real server."""
    phone, channel = new_id("phone"), new_id("ch")
    device = ServerApi(str(api.base_url), phone, DeviceKey.generate())
    assert device.enroll(ENROLL, "sim", channel)  # the broker secret
    assert device.poll().notice is None
    assert post_release(api, sample_release("2026.47", 1, channel)).status_code == 201
    notice = device.poll().notice
    assert notice is not None
    assert notice.release_version == "2026.47"
    reports = [sample_report(phone, 0), sample_report(phone, 1, UpdateState.INSTALLED)]
    assert device.send_reports(reports) == {0, 1}
    assert device.send_reports(reports) == {0, 1}
    assert len(reports_held(api, phone)) == 2
    stranger = ServerApi(str(api.base_url), phone, bearer="stolen?")
    with pytest.raises(TransportError, match="401"):
        stranger.poll()


# ---------------------------------------------------------------------- rollouts


def update_rollout(api: httpx.Client, rollout_id: str, **change: Any) -> httpx.Response:
    return api.post(f"/api/v1/rollouts/{rollout_id}", json=change, headers=ADMIN_AUTH)


def test_a_rollout_is_widened_paused_and_resumed(api: httpx.Client) -> None:
    phone, channel = new_id("phone"), new_id("ch")
    credential = enroll(api, phone, channel)
    created = post_release(api, {**sample_release("2026.47", 1, channel), "percentage": 1})
    rollout_id = created.json()["rollout_id"]

    def notice() -> tuple[float, bool]:
        current = poll(api, phone, credential).notice
        assert current is not None
        return current.percentage, current.paused

    assert notice() == (1.0, False)
    assert update_rollout(api, rollout_id, paused=True).json()["paused"] is True
    assert notice() == (1.0, True)
    assert update_rollout(api, rollout_id, percentage=50, paused=False).status_code == 200
    assert notice() == (50.0, False)
    assert update_rollout(api, rollout_id, percentage=150).status_code == 422
    assert update_rollout(api, rollout_id, ring="x").status_code == 422
    assert update_rollout(api, new_id("nope"), paused=True).status_code == 404
    assert notice() == (50.0, False)


def test_changing_an_older_rollout_leaves_the_current_notice(api: httpx.Client) -> None:
    phone, channel = new_id("phone"), new_id("ch")
    credential = enroll(api, phone, channel)
    old = post_release(api, sample_release("2026.46", 1, channel)).json()
    post_release(api, sample_release("2026.47", 2, channel))
    assert update_rollout(api, old["rollout_id"], paused=True).status_code == 200
    current = poll(api, phone, credential).notice
    assert current is not None
    assert (current.release_version, current.paused) == ("2026.47", False)


def test_oversized_and_unsized_bodies_are_refused_unread(db_url: str) -> None:
    settings = Settings(
        db_url=db_url, admin_token=ADMIN, enrollment_token=ENROLL, max_body_bytes=1000
    )
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        phone = new_id("phone")
        credential = enroll(client, phone)
        big = [report(phone, seq) for seq in range(50)]
        answer = client.post(reports_path(phone), json=big, headers=auth(credential))
        assert answer.status_code == 413
        assert "larger than 1000 bytes" in answer.json()["detail"]
        chunks = iter([b"[", b"]"])
        chunked = client.post(reports_path(phone), content=chunks, headers=auth(credential))
        assert chunked.status_code == 411
        assert reports_held(client, phone) == []
