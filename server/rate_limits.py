"""Rate limits against abuse: enrollment, F-code redemption and failed authentication, each
counted per client address and per device id, refused with 429 and `Retry-After`.

The counting is the `limits` library's moving window over its in-memory storage: each server
process (replica) counts on its own, so N replicas allow up to N times each limit. The
addresses are the peers uvicorn sees (behind a proxy, run it with `--proxy-headers` and
`--forwarded-allow-ips` so the client's address is the one counted).

Enrollment and redemption count every attempt (`RateLimits.hit`, called by their routes).
Failed authentication is counted by `AuthFailureLimit`, an ASGI middleware: an answer of 401
to a request that presented a credential counts against its address and the device of its
path; while either is over its limit, every request from that address or for that device is
answered 429 before it reaches the app.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import TooManyRequestsError
from server.settings import RateLimitConfig
from wire.paths import DEVICES_PATH

UNKNOWN_ADDRESS: Final = "unknown"


@dataclass(frozen=True)
class Rule:
    """One counted action: its name and its limit per address and per device."""

    action: str
    per_address: RateLimitItem
    per_device: RateLimitItem


class RateLimits:
    """The server's counters (one per process) and the three rules."""

    def __init__(self, config: RateLimitConfig) -> None:
        self._window = MovingWindowRateLimiter(MemoryStorage())
        self.enroll = _rule("enroll", config.enroll_per_address, config.enroll_per_device)
        self.redeem = _rule("redeem", config.redeem_per_address, config.redeem_per_device)
        self.auth_failure = _rule(
            "auth-failure", config.auth_failures_per_address, config.auth_failures_per_device
        )

    def hit(self, rule: Rule, address: str, device_id: str = "") -> None:
        """Count one attempt; TooManyRequestsError if the address or device is over the limit
        (the refused attempt is not counted)."""
        retry_after = self.retry_after(rule, address, device_id)
        if retry_after is not None:
            raise TooManyRequestsError(rule.action, retry_after)
        for item, key in _counters(rule, address, device_id):
            self._window.hit(item, rule.action, key)

    def retry_after(self, rule: Rule, address: str, device_id: str = "") -> int | None:
        """Seconds until the address and the device may try again; None if they may now."""
        waits = [
            self._seconds_to_reset(item, rule.action, key)
            for item, key in _counters(rule, address, device_id)
            if not self._window.test(item, rule.action, key)
        ]
        return max(waits, default=None)

    def _seconds_to_reset(self, item: RateLimitItem, *keys: str) -> int:
        stats = self._window.get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - time.time()))


def _rule(action: str, per_address: str, per_device: str) -> Rule:
    return Rule(action, _limit(action, per_address), _limit(action, per_device))


def _limit(action: str, text: str) -> RateLimitItem:
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"rate limit of {action}: {text!r} is not e.g. 20/minute") from None


def _counters(rule: Rule, address: str, device_id: str) -> Iterable[tuple[RateLimitItem, str]]:
    yield rule.per_address, f"address:{address}"
    if device_id:
        yield rule.per_device, f"device:{device_id}"


def client_address(request: Request) -> str:
    return request.client.host if request.client else UNKNOWN_ADDRESS


ClientAddress = Annotated[str, Depends(client_address)]


# --------------------------------------------------------------------------- failed authentication


class AuthFailureLimit:
    """ASGI middleware: counts 401 answers to requests that carried a credential and turns
    away (429) an address or a device id with too many of them."""

    def __init__(self, app: ASGIApp, limits: RateLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address, device_id = _scope_address(scope), path_device_id(scope["path"])
        rule = self.limits.auth_failure
        retry_after = self.limits.retry_after(rule, address, device_id)
        if retry_after is not None:
            await _send_too_many(send, TooManyRequestsError(rule.action, retry_after))
            return
        statuses: list[int] = []

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        await self.app(scope, receive, watched_send)
        if statuses[:1] == [401] and _presents_credential(scope):
            self.limits.hit(rule, address, device_id)


def path_device_id(path: str) -> str:
    """The device id of a path under /devices/<id>/..., or ""."""
    head, _, rest = path.partition(DEVICES_PATH + "/")
    return rest.split("/", 1)[0] if not head and "/" in rest else ""


def _scope_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else UNKNOWN_ADDRESS


def _presents_credential(scope: Scope) -> bool:
    """A request that tried to authenticate: an Authorization header or a `token` query."""
    has_header = any(name == b"authorization" for name, _ in scope.get("headers", ()))
    return has_header or b"token=" in scope.get("query_string", b"")


async def _send_too_many(send: Send, refusal: TooManyRequestsError) -> None:
    body = json.dumps({"detail": str(refusal)}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in refusal.headers().items()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
