"""The server's access log and request metrics, as one ASGI middleware.

One line per request on the `server.access` logger: the client's address, the method, the path
without its query string, the status and the duration. It replaces uvicorn's access log,
which prints the whole request line, query string included: a credential in a query would
end up in the log. No header is ever logged. Each record also carries its fields as
attributes (`client`, `method`, `path`, `route`, `status`, `duration_ms`, `request_id`, and
`device_id` / `rollout_id` when the path names them) for `server.json_logs`' formatter.

Each request gets a request id (the caller's `X-Request-ID` if it is sane, else a new one; it
is echoed back) and its route template (`/api/v1/devices/{device_id}/poll`): metrics are
labelled by template, never by raw path, so they do not grow per device. The ids are also set
in `server.json_logs`' context for every log line the request causes."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.json_logs import device_id_var, request_id_var, rollout_id_var
from server.metrics import process_metrics
from wire import reports_path

ACCESS_LOGGER: Final = "server.access"
NO_ANSWER: Final = 500  # the status logged when the app failed before it answered
log = logging.getLogger(ACCESS_LOGGER)
REQUEST_ID_HEADER: Final = b"x-request-id"
SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
UNMATCHED: Final = "(unmatched)"
LOGGED_IDS: Final = frozenset({"device_id", "rollout_id"})
REPORTS_ROUTE: Final = reports_path("{device_id}")
REFUSAL_BY_STATUS: Final = {401: "unauthenticated", 403: "forbidden", 404: "unknown_device",
                            409: "conflict", 413: "too_large", 422: "invalid",
                            429: "rate_limited"}  # fmt: skip


@dataclass(frozen=True)
class RouteMatch:
    template: str
    params: dict[str, str]


@dataclass(frozen=True)
class RouteTable:
    """Each route's path pattern, template and methods, in the order the app tries them."""

    entries: tuple[tuple[re.Pattern[str], str, frozenset[str]], ...]

    @classmethod
    def of(cls, routes: Sequence[BaseRoute]) -> RouteTable:
        entries = []
        for context in iter_route_contexts(routes):  # included routers, flattened
            pattern = getattr(context, "path_regex", None)
            if pattern is not None and context.path:
                methods = frozenset(getattr(context, "methods", None) or ())
                entries.append((pattern, str(context.path), methods))
        return cls(tuple(entries))

    def match(self, method: str, path: str) -> RouteMatch:
        """The template and path parameters of the route that serves `method path`."""
        partial: RouteMatch | None = None
        for pattern, template, methods in self.entries:
            found = pattern.match(path)
            if found is None:
                continue
            matched = RouteMatch(template, found.groupdict())
            if not methods or method in methods:
                return matched
            partial = partial or matched  # the path matches, the method does not (405)
        return partial or RouteMatch(UNMATCHED, {})


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER:
            given: str = value.decode("latin-1")
            if SANE_REQUEST_ID.fullmatch(given):
                return given
    return secrets.token_hex(8)


class AccessLog:
    """Wraps the app: `routes` is the app's route list (read at the first request, so
    routers included after the middleware count)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self._table: RouteTable | None = None

    def table(self) -> RouteTable:
        if self._table is None:  # built on the first request, once every router is in
            self._table = RouteTable.of(self.routes)
        return self._table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        route = self.table().match(str(scope.get("method", "")), str(scope.get("path", "")))
        tokens = (
            request_id_var.set(request_id),
            device_id_var.set(str(route.params.get("device_id", ""))),
            rollout_id_var.set(str(route.params.get("rollout_id", ""))),
        )
        status = {"code": NO_ANSWER}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            self._record(scope, request_id, route, status["code"], elapsed)
            for var, token in zip(
                (request_id_var, device_id_var, rollout_id_var), tokens, strict=True
            ):
                var.reset(token)

    def _record(
        self, scope: Scope, request_id: str, route: RouteMatch, status: int, seconds: float
    ) -> None:
        method = str(scope.get("method", ""))
        metrics = process_metrics()
        metrics.observe_request(method, route.template, status, seconds)
        if route.template == REPORTS_ROUTE and status >= 400:
            metrics.report_refused("http", REFUSAL_BY_STATUS.get(status, str(status)))
        client = scope.get("client")
        fields = {
            "client": f"{client[0]}:{client[1]}" if client else "-",
            "method": method,
            "path": str(scope.get("path", "")),  # ASGI keeps the query apart, never logged
            "route": route.template,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "request_id": request_id,
            **{k: str(v) for k, v in route.params.items() if k in LOGGED_IDS},
        }
        log.info(
            "%(client)s %(method)s %(path)s %(status)d %(duration_ms).1f ms", fields, extra=fields
        )
