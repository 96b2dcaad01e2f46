"""The whole HTTP API against its own OpenAPI schema (schemathesis), as each role: whatever
schemathesis sends, the server answers no 5xx, only status codes it documents, and bodies that
match their documented schema. A bounded number of examples per operation keeps it quick."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lab.processes import live_server
from server.app import create_app
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK, new_id, sample_release
from wire import ENROLL_PATH

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
EXAMPLES_PER_OPERATION = 8
ROLES = ("admin", "release_engineer", "viewer", "tester", "device")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

pytestmark = [
    pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK),  # see server.testing
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("db") / "ota.db"
    settings = Settings(
        db_url=f"sqlite:///{db}", admin_token=ADMIN, enrollment_token=ENROLL, rollout_tick_s=0
    )
    with live_server(settings) as url:
        yield url


def _token(client: httpx.Client, role: str) -> str:
    if role == "admin":
        return ADMIN
    if role == "device":
        body = {"enrollment_token": ENROLL, "device_id": new_id("d"), "model": "sim"}
        answer = client.post(ENROLL_PATH, json={**body, "channel": "stable"})
        return str(answer.json()["credential"])
    answer = client.post(
        "/api/v1/tokens",
        json={"role": role, "name": new_id(role)},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    return str(answer.json()["token"])


@pytest.fixture(scope="module")
def tokens(server_url: str) -> dict[str, str]:
    with httpx.Client(base_url=server_url, timeout=20) as client:
        client.post(
            "/api/v1/releases",
            json=sample_release("2026.47", 1),
            headers={"Authorization": f"Bearer {ADMIN}"},
        )  # something to list
        return {role: _token(client, role) for role in ROLES}


# Fuzzing only, `EXAMPLES_PER_OPERATION` examples each: the coverage phase alone would send
# thousands of requests per role and take minutes.
FUZZING_ONLY = SchemathesisConfig.from_dict(
    {"phases": {name: {"enabled": False} for name in ("examples", "coverage", "stateful")}}
)
# The schema is the app's own; building the app touches nothing (the lifespan does that).
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi(), config=FUZZING_ONLY)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_schema_for_every_role(
    case: Any, server_url: str, tokens: dict[str, str]
) -> None:
    for role in ROLES:  # each example as each role: what one may do, another is refused
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        case.call_and_validate(base_url=server_url, headers=headers, checks=CHECKS)
