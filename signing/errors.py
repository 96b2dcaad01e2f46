"""The signing side's error family: one base, one class per kind of failure.

Outside exceptions (OSError, botocore, cryptography, python-tuf) are mapped into these at the
boundary where they happen, so the CLI can print one clear line for any of them. Caller bugs
(TypeError, AssertionError, ...) are not mapped.
"""

from __future__ import annotations


class SigningError(Exception):
    """Base of every error the signing side reports to a release engineer."""


class StorageError(SigningError):
    """The repository storage (local folder or S3) failed or was given a bad name or URL."""


class KeysError(SigningError):
    """Signing keys are missing, already exist, unreadable, or do not match the root."""


class PublishError(SigningError):
    """A release could not be published; the repository was left as it was."""


class RepositoryError(SigningError):
    """The repository in storage is missing, inconsistent, or not signed by its own keys."""


class NotifyError(SigningError):
    """The server could not be told about a release (the release itself stays published)."""
