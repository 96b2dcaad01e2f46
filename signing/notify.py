"""Tell the update server that a signed release exists (POST /api/v1/releases)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from signing.errors import NotifyError
from signing.repo import PublishedRelease
from wire import API_PREFIX

RELEASES_PATH = f"{API_PREFIX}/releases"


def notify_server(
    server: str, token: str, release: PublishedRelease, *, timeout: float = 20.0
) -> dict[str, Any]:
    """POST the release to `server`; return the server's JSON answer (or {} if none)."""
    url = server.rstrip("/") + RELEASES_PATH
    if not url.startswith(("http://", "https://")):
        raise NotifyError(f"server URL must start with http:// or https://, not {server!r}")
    request = urllib.request.Request(  # noqa: S310  # http(s) checked above
        url,
        data=json.dumps(release.to_dict()).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # http(s) checked above
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"{url} answered HTTP {exc.code}: {_detail(exc)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise NotifyError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    return _json_object(body)


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
