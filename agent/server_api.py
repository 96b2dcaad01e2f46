"""The agent's HTTP side of the wire contract: enroll, poll, send reports, and the beta
tester's calls (redeem an F-code, leave preview, feedback, votes).

All outside failures are mapped to TransportError here, at this one boundary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import urllib3

from agent.errors import TransportError
from wire import (
    ENROLL_PATH,
    FEEDBACK_PATH,
    CommandAck,
    PollAnswer,
    ProtocolError,
    ReportsAck,
    StatusReport,
    command_ack_path,
    leave_preview_path,
    poll_path,
    redeem_path,
    reports_path,
    vote_path,
)

_TIMEOUT = urllib3.Timeout(connect=5.0, read=20.0)
# The server refused what we sent (conflict, invalid, too large): sending it again won't help.
REFUSED_STATUSES = frozenset({409, 413, 422})


class ServerApi:
    def __init__(self, server_url: str, device_id: str, credential: str = "") -> None:
        self._base = server_url.rstrip("/")
        self._device_id = device_id
        self.credential = credential
        self._http = urllib3.PoolManager(retries=False, timeout=_TIMEOUT)

    def enroll(self, enrollment_token: str, model: str, channel: str) -> str:
        """Trade an enrollment token for this device's own credential."""
        body = {
            "enrollment_token": enrollment_token,
            "device_id": self._device_id,
            "model": model,
            "channel": channel,
        }
        data = self._request("POST", ENROLL_PATH, body, auth=False)
        credential = data.get("credential")
        if not isinstance(credential, str) or not credential:
            raise TransportError("enrollment answer carries no credential")
        self.credential = credential
        return credential

    def poll(self) -> PollAnswer:
        raw = self._request_raw("GET", poll_path(self._device_id), None)
        try:
            return PollAnswer.from_json(raw)
        except ProtocolError as exc:
            raise TransportError(f"bad poll answer: {exc}") from None

    def send_reports(self, reports: Sequence[StatusReport]) -> set[int]:
        """POST reports; returns the sequence numbers the server now holds."""
        body = [r.to_dict() for r in reports]
        raw = self._request_raw("POST", reports_path(self._device_id), body)
        try:
            return set(ReportsAck.from_json(raw).acked)
        except ProtocolError as exc:
            raise TransportError(f"bad reports answer: {exc}") from None

    def ack_commands(self, command_ids: Sequence[str]) -> None:
        """Tell the server these commands are stored or handled: no poll repeats them."""
        body = CommandAck(tuple(command_ids)).to_dict()
        self._request_raw("POST", command_ack_path(self._device_id), body)

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

    def _request_raw(self, method: str, path: str, body: Any, *, auth: bool = True) -> bytes:
        headers = {"Accept": "application/json"}
        if auth and self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            resp = self._http.request(method, self._base + path, body=payload, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            raise TransportError(f"{method} {path}: {exc}") from None
        if resp.status >= 400:
            raise TransportError(
                f"{method} {path}: HTTP {resp.status}: {_detail(resp.data)}",
                retryable=resp.status not in REFUSED_STATUSES,
            )
        return bytes(resp.data)


def _detail(raw: bytes) -> str:
    try:
        detail = json.loads(raw).get("detail", "")
    except (ValueError, AttributeError):
        return raw[:200].decode(errors="replace")
    return str(detail)[:200]
