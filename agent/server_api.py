"""The agent's HTTP side of the wire contract: enroll with the device's key, sign in by proof
of it, poll, send reports, and the beta tester's calls (redeem an F-code, leave preview,
feedback, votes).

All outside failures are mapped to TransportError here, at this one boundary.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3

from agent.config import AgentConfig
from agent.errors import TransportError
from agent.identity import DeviceKey, device_key
from agent.reset_retry import OnceAfterAReset
from wire import (
    ENROLL_PATH,
    FEEDBACK_PATH,
    TRUSTED_TIMESTAMP_HEADER,
    CommandAck,
    PollAnswer,
    ProtocolError,
    ReportsAck,
    StatusReport,
    TrustedTimestamp,
    broker_secret_path,
    challenge_path,
    command_ack_path,
    device_token_path,
    enroll_request,
    leave_preview_path,
    poll_path,
    redeem_path,
    reports_path,
    token_statement,
    vote_path,
)

_TIMEOUT = urllib3.Timeout(connect=5.0, read=20.0)
RENEW_SHARE = 0.8  # an access token is renewed after this share of its lifetime
# The server refused what we sent (conflict, invalid, too large): sending it again won't help.
REFUSED_STATUSES = frozenset({409, 413, 422})
# "Come back later" answers (overloaded, rate limited, the database away): their Retry-After is
# honoured, within bounds: a server cannot park a device for a week with one header.
BUSY_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 600.0
DEFAULT_RETRY_AFTER_S = 5.0  # a busy answer without a usable Retry-After
# A request sent on a kept-alive connection the server closed meanwhile comes back as
# "connection aborted/reset" though the server never saw it. Those that may run twice (GETs,
# reports the server stores once by seq, command acks) are sent again, once, on a new
# connection; the others (enrollment, a nonce's token, an F-code) fail as before and the
# caller's loop decides.
ONCE_MORE = OnceAfterAReset(
    total=1,
    connect=0,
    read=1,
    status=0,
    other=0,
    redirect=False,
    allowed_methods=None,
    respect_retry_after_header=False,  # a busy answer is ours to handle (ServerBusyError)
)


class ServerBusyError(TransportError):
    """The server said "not now" (429/503): nothing is sent to it for `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, retryable=True)
        self.retry_after_s = retry_after_s


def retry_after_s(header: str | None, *, now: float | None = None) -> float:
    """Seconds a Retry-After header (delta-seconds or an HTTP date) asks for, bounded to
    [0, MAX_RETRY_AFTER_S]; DEFAULT_RETRY_AFTER_S when missing or unreadable."""
    text = (header or "").strip()
    try:
        wait = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text).timestamp()
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER_S
        wait = moment - (time.time() if now is None else now)
    if math.isnan(wait):
        return DEFAULT_RETRY_AFTER_S
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


class ServerApi:
    """The device's client. With the device's key it authenticates by proof of that key: it
    signs a server challenge for a short-lived access token, renews the token before it
    expires and once more on a 401. Without a key, `bearer` (a beta tester's token) is sent
    as it is."""

    def __init__(
        self,
        server_url: str,
        device_id: str,
        key: DeviceKey | None = None,
        *,
        bearer: str = "",
        clock: Callable[[], float] = time.monotonic,
        http: urllib3.PoolManager | None = None,
    ) -> None:
        """`http`: a connection pool shared with other clients (the lab's fleet simulator
        runs thousands of devices over one pool per process); by default one of its own."""
        self._base = server_url.rstrip("/")
        self._device_id = device_id
        self._key = key
        self._bearer = bearer
        self._clock = clock
        self._token = ""
        self._renew_at = 0.0
        self._quiet_until = 0.0  # the server asked for no request before this (clock)
        # what each poll says about the device's trusted TUF timestamp (agent.daemon sets it)
        self.trust_source: Callable[[], TrustedTimestamp | None] | None = None
        self._http = http or urllib3.PoolManager(retries=False, timeout=_TIMEOUT)

    def enroll(
        self,
        enrollment_token: str,
        model: str,
        channel: str,
        *,
        previous_key: DeviceKey | None = None,
    ) -> str:
        """Enroll this device with its key (re-enrolling an id enrolled with another key
        takes `previous_key`); returns the broker secret. The answer's token is kept."""
        key = self._require_key()
        nonce = self._challenge()
        body = enroll_request(
            enrollment_token=enrollment_token,
            nonce=nonce,
            device_id=self._device_id,
            model=model,
            channel=channel,
            public_key=key.public_key,
            sign=key.sign,
            previous_sign=None if previous_key is None else previous_key.sign,
        )
        data = self._request("POST", ENROLL_PATH, body, auth=False)
        self._keep_token(data)
        return _text(data, "broker_secret", "enrollment")

    def fetch_broker_secret(self) -> str:
        """A new broker secret from the server (the old one stops working)."""
        data = self._request("POST", broker_secret_path(self._device_id), {})
        return _text(data, "broker_secret", "broker secret")

    def access_token(self) -> str:
        """A valid access token (signing a fresh challenge when due), or the fixed bearer."""
        if self._key is None:
            return self._bearer
        if not self._token or self._clock() >= self._renew_at:
            self._sign_in()
        return self._token

    def _require_key(self) -> DeviceKey:
        if self._key is None:
            raise TransportError("this needs the device's key, and there is none")
        return self._key

    def _challenge(self) -> str:
        data = self._request("GET", challenge_path(self._device_id), None, auth=False)
        return _text(data, "nonce", "challenge")

    def _sign_in(self) -> None:
        key = self._require_key()
        nonce = self._challenge()
        signature = key.sign(token_statement(nonce=nonce, device_id=self._device_id))
        body = {"nonce": nonce, "signature": signature}
        self._keep_token(
            self._request("POST", device_token_path(self._device_id), body, auth=False)
        )

    def _keep_token(self, data: dict[str, Any]) -> None:
        token, lifetime = data.get("token"), data.get("expires_in_s")
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float):
            raise TransportError("the server's answer carries no access token")
        self._token = token
        self._renew_at = self._clock() + max(0.0, float(lifetime) * RENEW_SHARE)

    def poll(self) -> PollAnswer:
        trusted = self.trust_source() if self.trust_source is not None else None
        extra = {TRUSTED_TIMESTAMP_HEADER: trusted.to_header()} if trusted else None
        raw = self._request_raw("GET", poll_path(self._device_id), None, headers=extra)
        try:
            return PollAnswer.from_json(raw)
        except ProtocolError as exc:
            raise TransportError(f"bad poll answer: {exc}") from None

    def send_reports(self, reports: Sequence[StatusReport]) -> set[int]:
        """POST reports; returns the sequence numbers the server now holds."""
        body = [r.to_dict() for r in reports]
        raw = self._request_raw("POST", reports_path(self._device_id), body, twice_ok=True)
        try:
            return set(ReportsAck.from_json(raw).acked)
        except ProtocolError as exc:
            raise TransportError(f"bad reports answer: {exc}") from None

    def ack_commands(self, command_ids: Sequence[str]) -> None:
        """Tell the server these commands are stored or handled: no poll repeats them."""
        body = CommandAck(tuple(command_ids)).to_dict()
        self._request_raw("POST", command_ack_path(self._device_id), body, twice_ok=True)

    def redeem_fcode(self, code: str) -> dict[str, Any]:
        """Join the channel an F-code opens; the answer holds `channel` and `tester_token`."""
        return self._request("POST", redeem_path(self._device_id), {"code": code})

    def leave_preview(self) -> dict[str, Any]:
        return self._request("POST", leave_preview_path(self._device_id), {})

    def send_feedback(self, feedback: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", FEEDBACK_PATH, feedback)

    def vote(self, group_id: int) -> dict[str, Any]:
        return self._request("POST", vote_path(group_id), {})

    def _request(self, method: str, path: str, body: Any, *, auth: bool = True) -> dict[str, Any]:
        raw = self._request_raw(method, path, body, auth=auth)
        try:
            data = json.loads(raw)
        except ValueError:
            raise TransportError(f"{method} {path}: answer is not JSON") from None
        if not isinstance(data, dict):
            raise TransportError(f"{method} {path}: answer is not a JSON object")
        return data

    def _request_raw(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        twice_ok: bool = False,
    ) -> bytes:
        """`twice_ok`: the request may reach the server twice with the same effect (GETs
        always may); only such a request is sent again after a reset connection."""
        payload = None if body is None else json.dumps(body).encode()
        again = twice_ok or method == "GET"
        resp = self._send(method, path, payload, auth=auth, extra=headers, again=again)
        if resp.status == 401 and auth and self._key is not None:
            self._token = ""  # expired or revoked: sign a fresh challenge, once
            resp = self._send(method, path, payload, auth=auth, extra=headers, again=again)
        if resp.status in BUSY_STATUSES:
            wait = retry_after_s(resp.headers.get("Retry-After"))
            self._quiet_until = max(self._quiet_until, self._clock() + wait)
            raise ServerBusyError(
                f"{method} {path}: HTTP {resp.status}: {_detail(resp.data)}", wait
            )
        if resp.status >= 400:
            raise TransportError(
                f"{method} {path}: HTTP {resp.status}: {_detail(resp.data)}",
                retryable=resp.status not in REFUSED_STATUSES,
            )
        return bytes(resp.data)

    def _send(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        *,
        auth: bool,
        extra: dict[str, str] | None = None,
        again: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        wait = self._quiet_until - self._clock()
        if wait > 0:  # no sleep here: the caller's loop stays free to stop (SIGTERM)
            raise ServerBusyError(f"{method} {path}: the server asked to wait {wait:.0f} s", wait)
        headers = {"Accept": "application/json", **(extra or {})}
        token = self.access_token() if auth else ""
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            return self._http.request(
                method,
                self._base + path,
                body=payload,
                headers=headers,
                retries=ONCE_MORE if again else False,
            )
        except urllib3.exceptions.MaxRetryError as exc:
            raise TransportError(f"{method} {path}: {exc.reason}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise TransportError(f"{method} {path}: {exc}") from None


def device_api(config: AgentConfig) -> ServerApi:
    """The device's HTTP client, authenticated by its key (none before it enrolled)."""
    return ServerApi(config.server_url, config.device_id, device_key(config.data_dir))


def _text(data: dict[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise TransportError(f"the {what} answer carries no {key}")
    return value


def _detail(raw: bytes) -> str:
    try:
        detail = json.loads(raw).get("detail", "")
    except (ValueError, AttributeError):
        return raw[:200].decode(errors="replace")
    return str(detail)[:200]
