"""Bounded input, on SQLite and PostgreSQL: every request field has bounds, a request that
breaks one is a 422 naming the field and stores nothing; what is stored is always served back;
sequence numbers cannot freeze a device; commands stay pending until the device acks them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, insert

from lab.processes import live_server
from server.app import create_app
from server.models import ApiToken, Device, DeviceCommand, Report, Train, utcnow
from server.settings import Settings
from server.testing import (
    MOSQUITTO_PIPE_LEAK,
    enroll_keyed,
    new_id,
    sample_release,
    sample_report,
)
from wire import CommandAck, PollAnswer, command_ack_path, poll_path, reports_path
from wire.bounds import MAX_SEQ_AHEAD

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing


@pytest.fixture(scope="module")
def api(shared_db_url: str) -> Iterator[httpx.Client]:
    settings = Settings(db_url=shared_db_url, admin_token=ADMIN, enrollment_token=ENROLL)
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        yield client


def enroll(api: httpx.Client, device_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {enroll_keyed(api, device_id, ENROLL).token}"}


def raw_post(api: httpx.Client, path: str, text: str, headers: dict[str, str]) -> httpx.Response:
    """POST JSON text as is (NaN, lone surrogates: what json= would not send)."""
    headers = {**headers, "Content-Type": "application/json"}
    return api.post(path, content=text.encode("utf-8", "surrogatepass"), headers=headers)


def refused_field(answer: httpx.Response) -> str:
    """The one field a 422 names, as "body.<field>" (or the service's message)."""
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    if isinstance(detail, str):
        return detail
    return ".".join(str(p) for p in detail[0]["loc"])


def releases_of(api: httpx.Client, channel: str) -> list[Any]:
    rows = api.get("/api/v1/releases", headers=ADMIN_AUTH).json()
    return [r for r in rows if r["channel"] == channel]


# ---------------------------------------------------------------------- every field has bounds


def _request_schemas(openapi: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema a request can carry: bodies (and what they refer to) and parameters."""
    components = openapi["components"]["schemas"]
    seen: set[str] = set()

    def walk(where: str, schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                yield from walk(name, components[name])
            return
        yield where, schema
        for key, sub in schema.get("properties", {}).items():
            yield from walk(f"{where}.{key}", sub)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                yield from walk(f"{where}[]", schema[key])
        for key in ("anyOf", "allOf", "oneOf"):
            for sub in schema.get(key, []):
                yield from walk(where, sub)

    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                yield from walk(f"{method} {path} {param['name']}", param["schema"])
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                yield from walk(f"{method} {path} body", media["schema"])


def test_every_string_and_integer_of_every_request_has_bounds() -> None:
    openapi = create_app(Settings()).openapi()
    unbounded = []
    for where, schema in _request_schemas(openapi):
        kind = schema.get("type")
        dated = schema.get("format") in ("date", "date-time")
        if kind == "string" and "maxLength" not in schema and "enum" not in schema and not dated:
            unbounded.append(f"{where}: string without maxLength")
        if kind == "integer" and ("minimum" not in schema or "maximum" not in schema):
            unbounded.append(f"{where}: integer without minimum and maximum")
        if kind == "number" and "maximum" not in schema and "exclusiveMaximum" not in schema:
            unbounded.append(f"{where}: number without maximum")
        if kind == "array" and "maxItems" not in schema:
            unbounded.append(f"{where}: array without maxItems")
    assert unbounded == []


# ---------------------------------------------------------------------- refused with 422


def test_a_rollout_timeout_beyond_a_year_is_refused_and_nothing_is_stored(
    api: httpx.Client,
) -> None:
    channel = new_id("ch")
    release = api.post(
        "/api/v1/releases", json=sample_release("1.0", 1, channel), headers=ADMIN_AUTH
    )
    assert release.status_code == 201, release.text
    before = api.get("/api/v1/rollouts", headers=ADMIN_AUTH).json()
    for timeout in ("1e20", "Infinity", "NaN", "-1"):
        body = f'{{"release_id": {release.json()["id"]}, "stuck_timeout_s": {timeout}}}'
        answer = raw_post(api, "/api/v1/rollouts", body, ADMIN_AUTH)
        assert refused_field(answer) == "body.stuck_timeout_s", timeout
    assert api.get("/api/v1/rollouts", headers=ADMIN_AUTH).json() == before


@pytest.mark.parametrize(
    ("field", "bad_json"),
    [
        ("version", '"\\ud800"'),  # a lone surrogate
        ("notes", '"a\\u0000b"'),  # NUL
        ("version", json.dumps("v" * 129)),
        ("length", str(2**64)),
        ("release_counter", "-1"),
        ("target_path", '"../../etc/passwd"'),
        ("target_path", '"sim\\\\stable\\\\rom.img"'),
        ("target_path", '"/abs/rom.img"'),
        ("published_at", '"9999-12-31T00:00:00Z"'),
        ("published_at", '"1900-01-01T00:00:00Z"'),
        ("percentage", "1e400"),
    ],
)
def test_a_release_with_an_out_of_bounds_field_is_refused_naming_it(
    api: httpx.Client, field: str, bad_json: str
) -> None:
    channel = new_id("ch")
    body = json.dumps(sample_release("1.0", 1, channel))
    body = body[:-1] + f', "{field}": {bad_json}}}'  # the last key wins
    answer = raw_post(api, "/api/v1/releases", body, ADMIN_AUTH)
    assert refused_field(answer) == f"body.{field}"
    json.dumps(answer.json(), ensure_ascii=False).encode()  # the answer itself is clean UTF-8
    assert releases_of(api, channel) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"detail": {"k": "x" * 20_000}}, "bytes of JSON"),
        ({"detail": json.loads("[" * 0 + '{"a":' * 30 + "1" + "}" * 30)}, "nested deeper"),
        ({"seq": 2**63}, "seq"),
        ({"slot": "s" * 33}, "slot"),
        ({"current_version": "2026\u0000"}, "NUL"),
        ({"at": 1e300}, "at"),
        ({"state": "exploded"}, "state"),
    ],
)
def test_a_report_out_of_bounds_is_refused_and_not_stored(
    api: httpx.Client, change: dict[str, Any], why: str
) -> None:
    phone = new_id("phone")
    auth = enroll(api, phone)
    report = {**sample_report(phone, 0).to_dict(), **change}
    answer = api.post(reports_path(phone), json=[report], headers=auth)
    assert why in refused_field(answer)
    held = api.get("/api/v1/reports", params={"device_id": phone}, headers=ADMIN_AUTH).json()
    assert held == []


def test_a_command_with_oversized_args_is_refused(api: httpx.Client) -> None:
    phone = new_id("phone")
    auth = enroll(api, phone)
    body = {"kind": "cancel", "args": {"why": "x" * 20_000}}
    answer = api.post(f"/api/v1/devices/{phone}/commands", json=body, headers=ADMIN_AUTH)
    assert refused_field(answer) == "body.args"
    assert PollAnswer.from_json(api.get(poll_path(phone), headers=auth).content).commands == ()


# ---------------------------------------------------------------------- sequence numbers


def _post(api: httpx.Client, phone: str, auth: dict[str, str], *reports: Any) -> httpx.Response:
    return api.post(reports_path(phone), json=[r.to_dict() for r in reports], headers=auth)


def test_a_seq_far_beyond_the_last_is_refused_and_does_not_freeze_the_device(
    api: httpx.Client,
) -> None:
    phone = new_id("phone")
    auth = enroll(api, phone)
    assert _post(api, phone, auth, sample_report(phone, 3)).status_code == 200
    far = sample_report(phone, 3 + MAX_SEQ_AHEAD + 1)
    assert "past the device's last report" in refused_field(_post(api, phone, auth, far))
    assert _post(api, phone, auth, sample_report(phone, 4)).json()["acked"] == [4]
    device = next(
        d for d in api.get("/api/v1/devices", headers=ADMIN_AUTH).json() if d["device_id"] == phone
    )
    assert device["last_seq"] == 4


def test_a_different_report_under_a_stored_seq_is_a_conflict_the_same_one_an_ack(
    api: httpx.Client,
) -> None:
    phone = new_id("phone")
    auth = enroll(api, phone)
    first = sample_report(phone, 7)
    assert _post(api, phone, auth, first).json()["acked"] == [7]
    assert _post(api, phone, auth, first).json()["acked"] == [7]  # idempotent
    other = sample_report(phone, 7).__class__(**{**first.__dict__, "slot": "b"})
    conflict = _post(api, phone, auth, other)
    assert conflict.status_code == 409
    assert "seq 7" in conflict.json()["detail"]
    assert _post(api, phone, auth, first, other).status_code == 409  # within one batch too
    held = api.get("/api/v1/reports", params={"device_id": phone}, headers=ADMIN_AUTH).json()
    assert [(r["seq"], r["slot"]) for r in held] == [(7, "a")]


# ---------------------------------------------------------------------- commands need an ack


def test_a_command_comes_again_until_the_device_acknowledges_it(api: httpx.Client) -> None:
    phone = new_id("phone")
    auth = enroll(api, phone)
    sent = api.post(
        f"/api/v1/devices/{phone}/commands", json={"kind": "cancel"}, headers=ADMIN_AUTH
    )
    command_id = sent.json()["command_id"]

    def polled() -> list[str]:
        answer = api.get(poll_path(phone), headers=auth)
        return [c.command_id for c in PollAnswer.from_json(answer.content).commands]

    assert polled() == [command_id]
    assert polled() == [command_id]  # the first answer may have been lost on the way
    ack = CommandAck((command_id, "not-mine")).to_dict()
    answer = api.post(command_ack_path(phone), json=ack, headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["acked"] == [command_id]
    assert polled() == []


def test_a_device_cannot_acknowledge_another_devices_command(api: httpx.Client) -> None:
    phone, other = new_id("phone"), new_id("phone")
    auth, other_auth = enroll(api, phone), enroll(api, other)
    sent = api.post(
        f"/api/v1/devices/{phone}/commands", json={"kind": "cancel"}, headers=ADMIN_AUTH
    )
    ack = CommandAck((sent.json()["command_id"],)).to_dict()
    assert api.post(command_ack_path(other), json=ack, headers=other_auth).json()["acked"] == []
    answer = api.get(poll_path(phone), headers=auth)
    assert len(PollAnswer.from_json(answer.content).commands) == 1


# ---------------------------------------------------------------------- stored rows served back


def test_odd_stored_rows_never_break_a_listing(api: httpx.Client, shared_db_url: str) -> None:
    """Rows as an older server, a hand edit or a bug could have left them."""
    phone = new_id("phone")
    auth = enroll(api, phone)
    now = utcnow()
    engine = create_engine(shared_db_url)
    with engine.begin() as conn:
        conn.execute(
            Device.__table__.update()
            .where(Device.device_id == phone)
            .values(state="exploded", reason="unheard-of", last_seq=None)
        )
        conn.execute(
            insert(Report).values(
                device_id=phone,
                seq=1,
                state="exploded",
                current_version="",
                reason="unheard-of",
                detail=["not", "an", "object"],
                device_at=0.0,
                received_at=now,
                via="carrier-pigeon"[:8],
            )
        )
        conn.execute(
            insert(Report).values(
                device_id=phone,
                seq=2,
                state="idle",
                current_version="",
                detail={"huge": "x" * 200_000},
                device_at=0.0,
                received_at=now,
                via="http",
            )
        )
        conn.execute(
            insert(DeviceCommand).values(
                command_id=new_id("c")[-32:],
                device_id=phone,
                kind="self-destruct",
                args={},
                status="pending",
                created_at=now,
            )
        )
        conn.execute(
            insert(ApiToken).values(
                name=new_id("odd"),
                role="overlord",
                subject="x",
                token_hash=new_id("h")[-64:],
                created_at=now,
                expires_at=now + timedelta(days=1),
            )
        )
        conn.execute(
            insert(Train).values(
                version=new_id("v"),
                model="sim",
                week_of="not-a-date",
                stage="bogus",
                created_at=now,
                updated_at=now,
            )
        )
    engine.dispose()
    for path in (
        "/api/v1/devices",
        "/api/v1/releases",
        "/api/v1/rollouts",
        "/api/v1/train",
        "/api/v1/tokens",
    ):
        assert api.get(path, headers=ADMIN_AUTH).status_code == 200, path
    signed_in = api.post("/signin", data={"token": ADMIN_AUTH["Authorization"].split()[-1]})
    assert signed_in.status_code in (200, 303)
    cookies = {"cookie": signed_in.headers["set-cookie"].split(";", 1)[0]}
    for page in ("/fleet", "/rollouts", "/train", "/testers"):  # the dashboard lists them too
        assert api.get(page, headers=cookies).status_code == 200, page
    held = api.get("/api/v1/reports", params={"device_id": phone}, headers=ADMIN_AUTH)
    assert held.status_code == 200
    assert [(r["seq"], r["state"]) for r in held.json()] == [(2, "idle"), (1, "exploded")]
    assert held.json()[1]["detail"] == {"value": ["not", "an", "object"]}
    poll = api.get(poll_path(phone), headers=auth)
    assert poll.status_code == 200
    assert PollAnswer.from_json(poll.content).commands == ()


def test_health_names_each_background_worker(tmp_path: Path) -> None:
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ota.db'}", rollout_tick_s=0.05)
    with live_server(settings) as url:
        workers = httpx.get(f"{url}/health").json()["workers"]
    scheduler = next(w for w in workers if w["name"] == "rollout-scheduler")
    assert scheduler["alive"] is True
