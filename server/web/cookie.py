"""The dashboard's session cookie, as pure functions: a signed, expiring `WebSession`.

The cookie holds who signed in (role, subject), the sha256 of the token they signed in with
(so a revoked token ends the session at the next request), the session's CSRF token and when
it expires; an HMAC-SHA256 over it with the server's key makes it tamper-evident. No secret is
in it: the token's hash is what the server stores anyway."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass

from server.api_models import Role

COOKIE_NAME = "ota_session"
SESSION_S = 12 * 3600  # a working day; signing in again is cheap
CSRF_BYTES = 24


@dataclass(frozen=True)
class WebSession:
    role: Role
    subject: str
    token_digest: str  # sha256 of the token signed in with
    csrf: str
    expires_at: float  # seconds since the epoch

    @classmethod
    def start(cls, role: Role, subject: str, token_digest: str, now: float) -> WebSession:
        csrf = secrets.token_urlsafe(CSRF_BYTES)
        return cls(role, subject, token_digest, csrf, now + SESSION_S)

    def csrf_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf.encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(payload: str, key: bytes) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def seal(session: WebSession, key: bytes) -> str:
    """The cookie value: base64 JSON, a dot, base64 HMAC."""
    payload = _b64(json.dumps(asdict(session), separators=(",", ":")).encode())
    return f"{payload}.{_mac(payload, key)}"


def unseal(value: str, key: bytes, now: float) -> WebSession | None:
    """The session in a cookie, or None if it is malformed, forged or expired."""
    payload, _, mac = value.partition(".")
    if not payload or not hmac.compare_digest(mac.encode(), _mac(payload, key).encode()):
        return None
    try:
        fields = json.loads(_unb64(payload))
        session = WebSession(**{**fields, "role": Role(fields["role"])})
    except (ValueError, TypeError, KeyError):
        return None
    return session if session.expires_at > now else None
