"""The server's error families. Services raise them; `server.app` maps each to one HTTP
status at a single boundary, with the message as `detail`."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the server refuses; the message says why, for the caller."""


class InvalidInputError(ServiceError):
    """The request is malformed; nothing was changed (422)."""


class NotAuthenticatedError(ServiceError):
    """No credential, or one that matches nothing (401)."""


class ForbiddenError(ServiceError):
    """A valid credential that may not do this (403)."""


class NotFoundError(ServiceError):
    """No such device or file (404)."""


class ConflictError(ServiceError):
    """It exists already (409)."""


class UnknownDeviceError(NotFoundError):
    """A report or command names a device that never enrolled."""


class GoneError(ServiceError):
    """It existed but is no longer valid, e.g. an expired F-code (410)."""


class TooLargeError(ServiceError):
    """A part of the request is over its size limit, e.g. a feedback log excerpt (413)."""


class TooManyRequestsError(ServiceError):
    """Too many attempts from one address or for one device; try again later (429)."""

    def __init__(self, action: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many {action} attempts; retry in {retry_after_s} s")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


# --------------------------------------------------------------------------- database outages

DB_RETRY_AFTER_S = 5  # what a 503 tells the caller to wait: a restart or failover, not a day
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database is away for a moment (answer 503, retry later) rather
    than that the request or the code is wrong (4xx/500).

    Unavailable: the pool had no connection to give; a connection that broke or was closed
    (PostgreSQL restarting, a failover, an administrator terminating backends, a database not
    accepting connections); SQLite's write lock still held after its busy timeout. SQLite also
    reports programming errors ("no such table") as OperationalError: those stay 500."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    if isinstance(exc, PoolTimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if type(exc.orig).__module__.startswith("sqlite3"):
        text = str(exc.orig).lower()
        return any(busy in text for busy in _SQLITE_BUSY)
    return True
