"""The role matrix: every endpoint of the whole app against every kind of caller, over real
uvicorn, with the expected answer from one explicit table.

The routes come from `create_app(...).routes`, so an endpoint added anywhere in server/ is
walked automatically, and one missing from `EXPECTED` fails `test_every_route_has_a_rule`:
nobody adds an unguarded endpoint by accident. Table rows whose route does not exist (yet)
are skipped. A denial is 401 for no, an unknown or a revoked token, 403 for a known token of
another role (or of another device); anything else (2xx, 404, 409, 422 ...) means the role
check let the caller through. Bodies are `{}`, so most allowed calls stop at validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Route

from lab.processes import live_server
from server.app import create_app
from server.auth import Role
from server.settings import RateLimitConfig, Settings
from server.testing import MOSQUITTO_PIPE_LEAK, enroll_keyed, new_id, sample_release
from wire import (
    API_PREFIX,
    ENROLL_PATH,
    FEEDBACK_PATH,
    TUF_METADATA_PATH,
    TUF_TARGETS_PATH,
    broker_secret_path,
    challenge_path,
    command_ack_path,
    device_token_path,
    leave_preview_path,
    poll_path,
    redeem_path,
    reports_path,
    vote_path,
)

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing

ADMIN_SECRET = "admin-secret"
ENROLL = "enroll-secret"

A, R, V, T, D = Role.ADMIN, Role.RELEASE_ENGINEER, Role.VIEWER, Role.TESTER, Role.DEVICE


@dataclass(frozen=True)
class Rule:
    """Who may call an endpoint: `roles`, or anyone when `public`. With `own_device`, a device
    (or a tester bound to a device) passes only for the `{device_id}` of its own device."""

    roles: frozenset[Role] = frozenset()
    public: bool = False
    own_device: bool = False
    web_status: int | None = None  # the dashboard: this answer whoever calls with a bearer


def web(status: int) -> Rule:
    """A dashboard page or form: a bearer token is no way in (the session cookie is), so every
    caller gets the same answer: 303 to the sign-in page, or the form's own refusal."""
    return Rule(web_status=status)


def allow(*roles: Role, own_device: bool = False) -> Rule:
    return Rule(frozenset(roles), own_device=own_device)


PUBLIC = Rule(public=True)
NO_RATE_LIMITS = RateLimitConfig.all_at("100000/minute")
P = API_PREFIX

EXPECTED: dict[tuple[str, str], Rule] = {
    # FastAPI's own pages: the API's shape is no secret
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/health"): PUBLIC,  # workers alive and when they ran: no device, release or secret
    ("GET", "/docs"): PUBLIC,  # the API's reference page (server/routes/api_docs.py)
    # the signed repository: TUF metadata protects it, devices fetch it before enrolling
    ("GET", TUF_METADATA_PATH + "{name}"): PUBLIC,
    ("GET", TUF_TARGETS_PATH + "{target:path}"): PUBLIC,
    # devices: enrollment takes the fleet's enrollment token in the body
    ("POST", ENROLL_PATH): PUBLIC,
    ("GET", poll_path("{device_id}")): allow(D, own_device=True),
    # a device's key: a challenge for anyone, a token for its signature (the body proves it)
    ("GET", challenge_path("{device_id}")): PUBLIC,
    ("POST", device_token_path("{device_id}")): PUBLIC,
    ("POST", broker_secret_path("{device_id}")): allow(D, own_device=True),
    ("POST", f"{P}/devices/{{device_id}}/reset"): allow(A),
    ("GET", f"{P}/devices/{{device_id}}/audit"): allow(A),
    ("POST", f"{P}/enrollment-tokens"): allow(A),
    ("GET", f"{P}/enrollment-tokens"): allow(A),
    ("DELETE", f"{P}/enrollment-tokens/{{name}}"): allow(A),
    ("POST", command_ack_path("{device_id}")): allow(D, own_device=True),
    ("POST", reports_path("{device_id}")): allow(D, own_device=True),
    # the release engineer's API and the fleet view
    ("POST", f"{P}/releases"): allow(A, R),
    ("GET", f"{P}/releases"): allow(A, R, V),
    ("GET", f"{P}/devices"): allow(A, R, V),
    ("GET", f"{P}/reports"): allow(A, R, V),
    ("POST", f"{P}/devices/{{device_id}}/commands"): allow(A, R),
    ("GET", "/metrics"): allow(A, R, V),
    # the dashboard (server/web): its session cookie, never a bearer token or ?token=
    ("GET", "/"): web(303),
    ("GET", "/signin"): web(200),
    ("POST", "/signin"): web(401),  # no token in the form
    ("POST", "/signout"): web(303),
    ("GET", "/static/{name}"): web(404),  # "1" is no file of the dashboard's
    ("GET", "/fleet"): web(303),
    ("GET", "/fleet/devices/{device_id}"): web(303),
    ("GET", "/rollouts"): web(303),
    ("GET", "/rollouts/{rollout_id}"): web(303),
    ("GET", "/rollouts/{rollout_id}/confirm/{action}"): web(303),
    ("POST", "/rollouts/{rollout_id}/actions/{action}"): web(303),
    ("GET", "/train"): web(303),
    ("GET", "/testers"): web(303),
    ("POST", "/testers/join"): web(401),  # no device credential in the form
    ("POST", "/testers/feedback"): web(303),
    ("POST", "/testers/groups/{group_id}/vote"): web(303),
    ("POST", "/testers/groups/{group_id}/blocking"): web(303),
    ("POST", "/testers/groups/{group_id}/close"): web(303),
    # tokens
    ("POST", f"{P}/tokens"): allow(A),
    ("GET", f"{P}/tokens"): allow(A),
    ("DELETE", f"{P}/tokens/{{name}}"): allow(A),
    # rollouts, gates and the train (server/routes/rollouts.py)
    ("POST", f"{P}/rollouts"): allow(A, R),
    ("GET", f"{P}/rollouts"): allow(A, R, V),
    ("POST", f"{P}/rollouts/evaluate"): allow(A, R),
    ("GET", f"{P}/rollouts/{{rollout_id}}"): allow(A, R, V),
    ("POST", f"{P}/rollouts/{{rollout_id}}"): allow(A, R),
    ("POST", f"{P}/rollouts/{{rollout_id}}/override"): allow(A, R),
    ("POST", f"{P}/rollouts/{{rollout_id}}/pause"): allow(A, R),
    ("POST", f"{P}/rollouts/{{rollout_id}}/resume"): allow(A, R),
    ("POST", f"{P}/rollouts/{{rollout_id}}/abort"): allow(A, R),
    ("GET", f"{P}/train"): allow(A, R, V),
    ("POST", f"{P}/train"): allow(A, R),
    ("POST", f"{P}/train/advance"): allow(A, R),
    ("GET", f"{P}/announcements"): allow(A, R, V, T),
    # beta testers (server/routes/testers.py)
    ("POST", f"{P}/fcodes"): allow(A, R),
    ("POST", redeem_path("{device_id}")): allow(D, own_device=True),
    ("POST", leave_preview_path("{device_id}")): allow(D, own_device=True),
    ("POST", FEEDBACK_PATH): allow(A, T, D),
    ("POST", vote_path("{group_id}")): allow(A, T),
    ("GET", f"{FEEDBACK_PATH}/surfacing"): allow(A, R, V, T),
    ("POST", f"{FEEDBACK_PATH}/groups/{{group_id}}/blocking"): allow(A, R),
    ("POST", f"{FEEDBACK_PATH}/groups/{{group_id}}/close"): allow(A, R),
    # health (server/routes/health.py): load balancers ask without a token; any token may
    # ask which role it has (`ota release publish` does, before it signs)
    ("GET", f"{P}/whoami"): allow(A, R, V, T, D),
}


@dataclass(frozen=True)
class Caller:
    """One kind of caller: a role (None: no role at all), and the token it sends."""

    label: str
    role: Role | None
    token: str = ""
    other_device: bool = False  # bound to a device other than the one in the path


ALLOWED, UNAUTHENTICATED, FORBIDDEN = "allow", "401", "403"


def expected(rule: Rule, caller: Caller) -> str:
    if rule.public:
        return ALLOWED
    if caller.role is None:
        return UNAUTHENTICATED
    if caller.role is Role.ADMIN and not rule.own_device:
        return ALLOWED
    if caller.role not in rule.roles or (rule.own_device and caller.other_device):
        return FORBIDDEN
    return ALLOWED


def observed(status: int) -> str:
    return {401: UNAUTHENTICATED, 403: FORBIDDEN}.get(status, ALLOWED)


def app_endpoints() -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, once per route; an unknown kind
    of route (a mount, a websocket) is listed as "?" so the table must say something about it."""
    app = create_app(Settings(db_url="sqlite://"))
    found: list[tuple[str, str]] = []
    for route in iter_route_contexts(app.routes):  # included routers, flattened with prefixes
        if isinstance(route.original_route, APIRoute | Route) and route.path:
            found.extend((m, route.path) for m in sorted((route.methods or set()) - {"HEAD"}))
        else:
            found.append(("?", str(route.path or route.original_route)))
    return found


ALL_ROUTES = app_endpoints()
ENDPOINTS = sorted(set(ALL_ROUTES))
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def concrete(path: str, device_id: str) -> str:
    return _PARAM.sub(lambda m: device_id if m[1] == "device_id" else "1", path)


# ---------------------------------------------------------------------- the world


@dataclass
class World:
    client: httpx.Client
    device_id: str  # the device every `{device_id}` names
    callers: list[Caller]


def _enroll(client: httpx.Client, device_id: str) -> str:
    return enroll_keyed(client, device_id, ENROLL).token


def _token(client: httpx.Client, role: Role, subject: str = "") -> str:
    body = {"role": role.value, "name": new_id(role.value), "subject": subject}
    answer = client.post(f"{P}/tokens", json=body, headers=bearer(ADMIN_SECRET))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _callers(client: httpx.Client, mine: str, other: str) -> list[Caller]:
    revoked_name = new_id("gone")
    revoked = client.post(
        f"{P}/tokens", json={"role": "viewer", "name": revoked_name}, headers=bearer(ADMIN_SECRET)
    ).json()["token"]
    assert client.delete(f"{P}/tokens/{revoked_name}", headers=bearer(ADMIN_SECRET)).is_success
    return [
        Caller("anonymous", None),
        Caller("unknown token", None, "made-up-token"),
        Caller("revoked token", None, revoked),
        Caller("admin (settings)", A, ADMIN_SECRET),
        Caller("admin (token)", A, _token(client, A)),
        Caller("release engineer", R, _token(client, R)),
        Caller("viewer", V, _token(client, V)),
        Caller("tester of the device", T, _token(client, T, mine)),
        Caller("tester of another device", T, _token(client, T, other), other_device=True),
        Caller("the device", D, _enroll(client, mine)),
        Caller("another device", D, _enroll(client, other), other_device=True),
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The whole matrix runs on SQLite; `test_a_few_cells_on_each_backend` covers PostgreSQL."""
    db_url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'ota.db'}"
    settings = Settings(
        db_url=db_url,
        admin_token=ADMIN_SECRET,
        enrollment_token=ENROLL,
        rate_limits=NO_RATE_LIMITS,  # the matrix fails to authenticate many times on purpose
    )
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        mine, other = new_id("phone"), new_id("phone")
        yield World(client, mine, _callers(client, mine, other))


# ---------------------------------------------------------------------- the tests


def test_every_route_has_a_rule() -> None:
    missing = [f"{method} {path}" for method, path in ENDPOINTS if (method, path) not in EXPECTED]
    assert not missing, f"endpoints without a row in EXPECTED (add who may call them): {missing}"


def test_no_route_hides_behind_another() -> None:
    """Two handlers on one method and path: only the first ever runs, and the matrix would
    check its guard, not the other's."""
    twice = sorted({e for e in ALL_ROUTES if ALL_ROUTES.count(e) > 1})
    assert not twice, f"served by more than one route: {twice}"


def test_the_table_is_walked_and_guards_most_of_the_api() -> None:
    walked = [e for e in ENDPOINTS if e in EXPECTED]
    guarded = [e for e in walked if not EXPECTED[e].public and EXPECTED[e].web_status is None]
    assert len(walked) >= 15, walked  # not an empty walk (a router the walk cannot see)
    assert len(guarded) >= 9, guarded


@pytest.mark.parametrize("index", range(11), ids=lambda i: f"caller{i}")
def test_role_matrix(world: World, index: int) -> None:
    caller = world.callers[index]
    wrong = []
    for method, path in ENDPOINTS:
        rule = EXPECTED.get((method, path))
        if rule is None:
            continue  # test_every_route_has_a_rule fails for it
        url = concrete(path, world.device_id)
        body: dict[str, str] | None = {} if method in {"POST", "PUT", "PATCH"} else None
        answer = world.client.request(method, url, json=body, headers=bearer(caller.token))
        if rule.web_status is not None:
            if answer.status_code != rule.web_status:
                wrong.append(f"{method} {path}: want {rule.web_status}, got {answer.status_code}")
            continue
        want, got = expected(rule, caller), observed(answer.status_code)
        if got != want or answer.status_code >= 500:
            wrong.append(f"{method} {path}: want {want}, got {answer.status_code} {answer.text!r}")
        if got == UNAUTHENTICATED:
            assert answer.headers.get("www-authenticate") == "Bearer", (method, path)
    assert not wrong, f"{caller.label}:\n" + "\n".join(wrong)


def test_a_forbidden_answer_names_the_roles_allowed(world: World) -> None:
    viewer = next(c for c in world.callers if c.role is V)
    answer = world.client.post(f"{P}/releases", json={}, headers=bearer(viewer.token))
    assert answer.status_code == 403
    detail = answer.json()["detail"]
    assert "admin, release_engineer" in detail
    assert "yours is viewer" in detail


def test_a_few_cells_on_each_backend(db_url: str) -> None:
    """Token lifecycle and a handful of matrix cells, on SQLite and on PostgreSQL."""
    settings = Settings(
        db_url=db_url,
        admin_token=ADMIN_SECRET,
        enrollment_token=ENROLL,
        rate_limits=NO_RATE_LIMITS,  # the matrix fails to authenticate many times on purpose
    )
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        mine, other = new_id("phone"), new_id("phone")
        callers = {c.label: c for c in _callers(client, mine, other)}
        cells = [
            ("release engineer", "POST", f"{P}/releases", 201),
            ("viewer", "POST", f"{P}/releases", 403),
            ("revoked token", "GET", f"{P}/releases", 401),
            ("viewer", "GET", f"{P}/releases", 200),
            ("the device", "GET", poll_path(mine), 200),
            ("another device", "GET", poll_path(mine), 403),
            ("tester of the device", "GET", poll_path(mine), 403),
            ("admin (token)", "GET", f"{P}/tokens", 200),
            ("release engineer", "GET", f"{P}/tokens", 403),
        ]
        for label, method, path, status in cells:
            body = sample_release("1", 1, new_id("ch")) if method == "POST" else None
            answer = client.request(method, path, json=body, headers=bearer(callers[label].token))
            assert answer.status_code == status, (label, method, path, answer.text)
