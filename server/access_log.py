"""The server's access log: one line per request with the client's address, the method, the
path without its query string, the status and the duration, on the `server.access` logger.

It replaces uvicorn's access log, which prints the whole request line, query string
included: a credential in a query (the dashboard's `?token=`) would end up in the log. No
header is ever logged. Each record also carries its fields as attributes (`client`,
`method`, `path`, `status`, `duration_ms`) for a structured formatter.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER: Final = "server.access"
NO_ANSWER: Final = 500  # the status logged when the app failed before it answered

log = logging.getLogger(ACCESS_LOGGER)


class AccessLog:
    """ASGI middleware writing one `server.access` line per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = NO_ANSWER

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            log_request(scope, status, time.perf_counter() - started)


def log_request(scope: Scope, status: int, seconds: float) -> None:
    """One line: `<client> <METHOD> <path> <status> <ms> ms`; never the query or a header."""
    client = scope.get("client")
    fields = {
        "client": f"{client[0]}:{client[1]}" if client else "-",
        "method": scope["method"],
        "path": scope["path"],  # ASGI keeps the query string apart, in scope["query_string"]
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
    }
    log.info("%(client)s %(method)s %(path)s %(status)d %(duration_ms).1f ms", fields, extra=fields)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging set-up, with our loggers (the access log among them) on its
    handler; run uvicorn with `access_log=False` next to it."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["server"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
