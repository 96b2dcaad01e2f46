"""Rate limits over real uvicorn: failed authentication, enrollment and F-code redemption,
per client address (clients bind distinct loopback addresses, 127.0.0.N) and per device id;
past a limit, 429 with `Retry-After`, and other addresses and devices are unaffected."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from lab.processes import live_server
from server.rate_limits import RateLimits, path_device_id
from server.settings import RateLimitConfig, Settings
from server.testing import MOSQUITTO_PIPE_LEAK, new_id
from wire import ENROLL_PATH, poll_path, redeem_path
from wire.paths import DEVICES_PATH, FCODES_PATH

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
LIMITS = RateLimitConfig(
    enroll_per_address="3/minute",
    enroll_per_device="2/minute",
    redeem_per_address="3/minute",
    redeem_per_device="2/minute",
    auth_failures_per_address="3/minute",
    auth_failures_per_device="2/minute",
)
_addresses = (f"127.0.0.{n}" for n in itertools.count(2))

Client = Callable[[], httpx.Client]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    """Makes clients of one fresh server, each from an address of its own."""
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'ota.db'}",
        admin_token=ADMIN,
        enrollment_token=ENROLL,
        rate_limits=LIMITS,
    )
    made: list[httpx.Client] = []

    def new_client() -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=next(_addresses))
        made.append(httpx.Client(base_url=url, transport=transport, timeout=20))
        return made[-1]

    with live_server(settings) as url:
        yield new_client
        for one in made:
            one.close()


def enroll(http: httpx.Client, device_id: str) -> httpx.Response:
    body = {"enrollment_token": ENROLL, "device_id": device_id, "model": "sim",
            "channel": "stable"}  # fmt: skip
    return http.post(ENROLL_PATH, json=body)


def assert_too_many(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert "too many" in answer.json()["detail"]


def test_failed_logins_past_the_limit_get_429_and_another_address_is_unaffected(
    client: Client,
) -> None:
    mallory, good = client(), client()
    for _ in range(3):
        assert mallory.get(DEVICES_PATH, headers=bearer("guess")).status_code == 401
    assert_too_many(mallory.get(DEVICES_PATH, headers=bearer("guess")))
    assert_too_many(mallory.get(DEVICES_PATH, headers=bearer(ADMIN)))  # the address waits
    for _ in range(5):  # asking without a credential is not a failed login
        assert good.get(DEVICES_PATH).status_code == 401
    assert good.get(DEVICES_PATH, headers=bearer(ADMIN)).status_code == 200
    assert good.post("/signin", data={"token": "guess"}).status_code == 401  # the form counts too


def test_failed_device_logins_are_counted_per_device_whatever_the_address(
    client: Client,
) -> None:
    phone, other = new_id("phone"), new_id("phone")
    credential = enroll(client(), phone).json()["credential"]
    other_credential = enroll(client(), other).json()["credential"]
    for _ in range(2):  # from two addresses, neither over its own limit
        assert client().get(poll_path(phone), headers=bearer("guess")).status_code == 401
    assert_too_many(client().get(poll_path(phone), headers=bearer(credential)))
    assert client().get(poll_path(other), headers=bearer(other_credential)).status_code == 200


def test_enrollment_is_limited_per_device_and_per_address(client: Client) -> None:
    phone = new_id("phone")
    assert enroll(client(), phone).status_code == 200
    assert enroll(client(), phone).status_code == 200
    assert_too_many(enroll(client(), phone))
    factory = client()
    for _ in range(3):
        assert enroll(factory, new_id("phone")).status_code == 200
    assert_too_many(enroll(factory, new_id("phone")))
    assert enroll(client(), new_id("phone")).status_code == 200


def test_fcode_redemption_is_limited_per_device(client: Client) -> None:
    phone, http = new_id("phone"), client()
    credential = enroll(http, phone).json()["credential"]
    issued = http.post(FCODES_PATH, json={"count": 1, "expires_in_s": 60}, headers=bearer(ADMIN))
    for guess in ("F-AAAA-AAAA-AAAA-AAAA", "F-BBBB-BBBB-BBBB-BBBB"):
        answer = http.post(redeem_path(phone), json={"code": guess}, headers=bearer(credential))
        assert answer.status_code == 404
    (code,) = issued.json()["codes"]
    answer = client().post(redeem_path(phone), json={"code": code}, headers=bearer(credential))
    assert_too_many(answer)


def test_the_device_of_a_path() -> None:
    assert path_device_id(poll_path("phone-1")) == "phone-1"
    assert path_device_id(redeem_path("p")) == "p"
    assert path_device_id(DEVICES_PATH) == ""
    assert path_device_id(f"{DEVICES_PATH}/") == ""
    assert path_device_id("/elsewhere" + poll_path("x")) == ""


def test_the_limits_come_from_the_environment() -> None:
    env = {"OTA_RATE_ENROLL_PER_ADDRESS": "5/hour", "OTA_RATE_REDEEM_PER_DEVICE": ""}
    limits = Settings.from_env(env).rate_limits
    assert limits == RateLimitConfig(enroll_per_address="5/hour")
    with pytest.raises(ValueError, match=r"not e\.g\. 20/minute"):
        RateLimits(RateLimitConfig(redeem_per_device="often"))
