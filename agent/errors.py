"""The agent's few error families. Each carries a `FailureReason` that goes into reports.

Checking code raises these; the runner decides what a failure means (retry, resume, give up
and report). Caller bugs (TypeError, AssertionError, ...) are not caught into reports.
"""

from __future__ import annotations

from wire import FailureReason


class AgentError(Exception):
    """Base of every error the agent turns into a report."""

    reason: FailureReason = FailureReason.INTERNAL

    def __init__(self, message: str, reason: FailureReason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class VerificationError(AgentError):
    """Signed metadata or downloaded bytes did not check out. Never retried as-is."""

    reason = FailureReason.METADATA


class TransportError(AgentError):
    """The network failed (connection, timeout, HTTP status, too slow).

    `retryable` is decided where the failure is understood (the fetcher): False for an
    answer that asking again will not change (404, 403...); the download retries the rest.
    """

    reason = FailureReason.DOWNLOAD

    def __init__(
        self, message: str, reason: FailureReason | None = None, *, retryable: bool = True
    ) -> None:
        super().__init__(message, reason)
        self.retryable = retryable


class UpdateCancelledError(AgentError):
    """The server or the owner cancelled the update while a step was running."""

    reason = FailureReason.CANCELLED


class InstallError(AgentError):
    """The slot could not take the image (too small, disk full, I/O error)."""

    reason = FailureReason.INTERNAL


class ConfigError(AgentError):
    """The agent's configuration file is missing, unreadable or wrong."""

    reason = FailureReason.INTERNAL
