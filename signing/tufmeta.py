"""Small shared pieces of TUF metadata handling: names, expiry, signing, serialization.

Everything here is built with python-tuf's Metadata API; nothing touches storage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

# python-tuf and securesystemslib re-export their public names without __all__, which mypy's
# strict mode does not count as exported; these are the documented public import paths.
from securesystemslib.signer import Signer  # type: ignore[attr-defined]
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Snapshot,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from signing.errors import KeysError, SigningError

METADATA_DIR: Final = "metadata"
TARGETS_DIR: Final = "targets"
TOP_LEVEL_ROLES: Final = ("root", "targets", "snapshot", "timestamp")
_SERIALIZER: Final = JSONSerializer(compact=False)


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long each role's metadata stays valid after it is signed, in days."""

    root: int = 365
    targets: int = 90
    snapshot: int = 7
    timestamp: int = 1

    def __post_init__(self) -> None:
        for role in TOP_LEVEL_ROLES:
            if getattr(self, role) < 1:
                raise ValueError(f"{role} expiry must be at least one day")

    def lifetime(self, role: str) -> timedelta:
        return timedelta(days=int(getattr(self, role)))

    def expires(self, role: str, now: datetime | None = None) -> datetime:
        start = now if now is not None else utc_now()
        return (start + timedelta(days=int(getattr(self, role)))).replace(microsecond=0)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def metadata_name(role: str, version: int | None = None) -> str:
    """Storage name of a role's metadata; versioned (consistent snapshot) unless timestamp."""
    if version is None or role == "timestamp":
        return f"{METADATA_DIR}/{role}.json"
    return f"{METADATA_DIR}/{version}.{role}.json"


def sign_and_serialize(md: Metadata[Any], signers: Iterable[Signer]) -> bytes:
    """Replace md's signatures with one from each signer and return the file's bytes."""
    md.signatures.clear()
    for signer in signers:
        add_signature(md, signer)
    return md.to_bytes(_SERIALIZER)


def add_signature(md: Metadata[Any], signer: Signer) -> None:
    """Sign `md` with `signer` (next to any signatures it has); a signer that fails (an HSM
    without its PIN, a KMS that refuses) becomes one KeysError naming the key and the role."""
    try:
        md.sign(signer, append=True)
    except UnsignedMetadataError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, SigningError) else exc
        raise KeysError(
            f"cannot sign {md.signed.type} with key {signer.public_key.keyid[:12]}: {cause}"
        ) from None


def serialize(md: Metadata[Any]) -> bytes:
    """The file's bytes, signatures as they are."""
    return md.to_bytes(_SERIALIZER)


def snapshot_metadata(version: int, targets_version: int, expires: datetime) -> Metadata[Any]:
    meta = {"targets.json": MetaFile(version=targets_version)}
    return Metadata(Snapshot(version=version, expires=expires, meta=meta))


def pin(version: int, data: bytes) -> MetaFile:
    """A reference to one metadata file by version, length and sha256."""
    return MetaFile(
        version=version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()}
    )


def timestamp_metadata(version: int, snapshot_meta: MetaFile, expires: datetime) -> Metadata[Any]:
    return Metadata(Timestamp(version=version, expires=expires, snapshot_meta=snapshot_meta))
