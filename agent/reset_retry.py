"""One more try for a request whose kept-alive connection broke under it.

A server closes idle kept-alive connections (uvicorn after 5 s); a request the client sends on
one just as it closes comes back as "connection aborted/reset" although the server never
handled it. urllib3 counts that as a read error: `OnceAfterAReset(read=1, ...)` sends it
again on a new connection. A read time-out is a read error too, but not that: the server is
slow, and a second wait would only hold a stopping agent longer, so it is not retried.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import urllib3
from urllib3.connectionpool import ConnectionPool


class OnceAfterAReset(urllib3.Retry):
    """One more try after the connection broke under the request; a read time-out is not
    that (the server is slow, and a second wait would only hold a stopping agent longer)."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: urllib3.BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if isinstance(error, urllib3.exceptions.ReadTimeoutError):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)
