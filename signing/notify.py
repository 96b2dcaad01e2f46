"""Tell the update server that a signed release exists (POST /api/v1/releases).

This one request stays here, on the standard library, rather than in `server.api_client`:
`signing` must not import `server` (the server imports signing), and `ota release publish
--server` is signing's own command. Its path comes from `wire.paths` like the client's."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from signing.errors import NotifyError
from signing.repo import PublishedRelease
from wire.paths import RELEASES_PATH, WHOAMI_PATH

PUBLISHING_ROLES = ("admin", "release_engineer")


def notify_server(
    server: str, token: str, release: PublishedRelease, *, timeout: float = 20.0
) -> dict[str, Any]:
    """POST the release to `server`; return the server's JSON answer (or {} if none)."""
    return _call(server, token, RELEASES_PATH, release.to_dict(), timeout)


def check_publisher(server: str, token: str, *, timeout: float = 20.0) -> str:
    """Before anything is signed: the server answers and `token` may register releases.
    Returns the token's role; NotifyError says what is wrong otherwise."""
    role = str(_call(server, token, WHOAMI_PATH, None, timeout).get("role", ""))
    if role not in PUBLISHING_ROLES:
        raise NotifyError(
            f"the token is a {role or 'unknown'} token; publishing needs a release_engineer's "
            "(`ota token create --role release_engineer`) or the admin token"
        )
    return role


def _call(
    server: str, token: str, path: str, body: dict[str, Any] | None, timeout: float
) -> dict[str, Any]:
    """GET (no body) or POST `path`; the JSON object answered, or NotifyError."""
    url = server.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise NotifyError(f"server URL must start with http:// or https://, not {server!r}")
    request = urllib.request.Request(  # noqa: S310  # http(s) checked above
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # http(s) checked above
            answer = response.read()
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"{url} answered HTTP {exc.code}: {_detail(exc)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise NotifyError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    return _json_object(answer)


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        text = ""
    return text[:200] or str(exc.reason)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
