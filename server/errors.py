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
