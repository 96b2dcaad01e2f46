"""The repository's current state, read back from storage the way a client would.

timestamp.json → the snapshot it pins (version, length, hash) → the targets version that
snapshot names; each signed by the keys the newest root trusts. Nothing comes from a side
file, so whatever a killed publish left behind that timestamp does not point at is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tuf.api.exceptions import LengthOrHashMismatchError, UnsignedMetadataError
from tuf.api.metadata import Metadata
from tuf.api.serialization import DeserializationError

from signing.errors import RepositoryError
from signing.storage import Storage
from signing.tufmeta import metadata_name

CLOCK_TOLERANCE = timedelta(hours=1)


@dataclass(frozen=True)
class RepoState:
    """Verified current metadata of every top-level role."""

    root: Metadata[Any]
    timestamp: Metadata[Any]
    snapshot: Metadata[Any]
    targets: Metadata[Any]
    # delegated targets roles by name: (their verified metadata, the Targets delegating them)
    delegated: dict[str, tuple[Metadata[Any], Any]] = field(default_factory=dict)

    def role(self, name: str) -> Metadata[Any]:
        """The live metadata of a targets-type role (top-level or delegated)."""
        if name == "targets":
            return self.targets
        if name not in self.delegated:
            raise RepositoryError(f"no role called {name!r} in the repository")
        return self.delegated[name][0]

    def delegator(self, name: str) -> Any:
        """Whoever names `name`'s keys and threshold: root, or a delegating Targets."""
        if name in ("root", "targets", "snapshot", "timestamp"):
            return self.root.signed
        self.role(name)
        return self.delegated[name][1]


def load_state(storage: Storage) -> RepoState:
    """Read and verify the live repository state; RepositoryError when it does not check out
    (the message names the file and the storage)."""
    try:
        return _load_state(storage)
    except RepositoryError as exc:
        if repr(storage) in str(exc):
            raise
        raise RepositoryError(f"{exc} (in {storage!r})") from None


def _load_state(storage: Storage) -> RepoState:
    root = _newest_root(storage)
    timestamp = _verified(root, "timestamp", _read(storage, metadata_name("timestamp")))
    snapshot_meta = timestamp.signed.snapshot_meta
    snapshot_bytes = _read(storage, metadata_name("snapshot", snapshot_meta.version))
    _check_pinned(snapshot_meta, snapshot_bytes, metadata_name("snapshot", snapshot_meta.version))
    snapshot = _verified(root, "snapshot", snapshot_bytes, snapshot_meta.version)
    targets_meta = snapshot.signed.meta["targets.json"]
    targets_bytes = _read(storage, metadata_name("targets", targets_meta.version))
    _check_pinned(targets_meta, targets_bytes, metadata_name("targets", targets_meta.version))
    targets = _verified(root, "targets", targets_bytes, targets_meta.version)
    delegated: dict[str, tuple[Metadata[Any], Any]] = {}
    _walk(storage, snapshot, targets, delegated)
    return RepoState(root, timestamp, snapshot, targets, delegated)


def delegated_names(targets: Any) -> list[str]:
    """The roles a Targets delegates to: named roles, or every hashed bin."""
    delegations = targets.delegations
    if delegations is None:
        return []
    if delegations.succinct_roles is not None:
        return list(delegations.succinct_roles.get_roles())
    return list(delegations.roles or {})


def _walk(
    storage: Storage,
    snapshot: Metadata[Any],
    delegator: Metadata[Any],
    found: dict[str, tuple[Metadata[Any], Any]],
) -> None:
    """Load every role `delegator` delegates to (depth first), each checked against the
    version snapshot names and the delegator's keys."""
    for name in delegated_names(delegator.signed):
        if name in found:
            continue
        meta = snapshot.signed.meta.get(f"{name}.json")
        if meta is None:
            raise RepositoryError(f"snapshot does not list delegated role {name}")
        data = _read(storage, metadata_name(name, meta.version))
        md = _verified(delegator, name, data, meta.version, kind="targets")
        found[name] = (md, delegator.signed)
        _walk(storage, snapshot, md, found)


def _read(storage: Storage, name: str) -> bytes:
    data = storage.get_bytes(name)
    if data is None:
        raise RepositoryError(f"{name} is missing from {storage!r}: run `ota keys init` first?")
    return data


def _parse(data: bytes, role: str, kind: str | None = None) -> Metadata[Any]:
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except DeserializationError as exc:
        raise RepositoryError(f"{role} metadata is not valid TUF metadata: {exc}") from exc
    if md.signed.type != (kind or role):
        raise RepositoryError(
            f"expected {kind or role} metadata for {role}, found {md.signed.type}"
        )
    return md


def _verified(
    delegator: Metadata[Any],
    role: str,
    data: bytes,
    version: int | None = None,
    *,
    kind: str | None = None,
) -> Metadata[Any]:
    md = _parse(data, role, kind)
    try:
        delegator.verify_delegate(role, md)
    except UnsignedMetadataError as exc:
        raise RepositoryError(
            f"{metadata_name(role, version)}: {role} metadata is not signed by its keys: {exc}"
        ) from exc
    if version is not None and md.signed.version != version:
        raise RepositoryError(f"{role} version {md.signed.version} where {version} was expected")
    return md


def _check_pinned(meta: Any, data: bytes, role: str) -> None:
    try:
        meta.verify_length_and_hashes(data)
    except LengthOrHashMismatchError as exc:
        raise RepositoryError(f"{role} does not match what pins it: {exc}") from exc


def _newest_root(storage: Storage) -> Metadata[Any]:
    """Walk N.root.json upwards from 1; each new root is signed by the old one and itself."""
    root = _verified_self(_parse(_read(storage, metadata_name("root", 1)), "root"))
    while (data := storage.get_bytes(metadata_name("root", root.signed.version + 1))) is not None:
        new_root = _verified(root, "root", data, root.signed.version + 1)
        root = _verified_self(new_root)
    return root


def _verified_self(root: Metadata[Any]) -> Metadata[Any]:
    try:
        root.verify_delegate("root", root)
    except UnsignedMetadataError as exc:
        raise RepositoryError(f"root version {root.signed.version} is not self-signed") from exc
    return root


def check_usable(
    state: RepoState, now: datetime, timestamp_lifetime: timedelta, *, root: bool = True
) -> None:
    """Refuse to sign on top of a repository devices cannot trust, or with a clock that
    disagrees with it: an expired root, or a live timestamp that expires further ahead than
    a fresh one would (this machine's clock is behind the one that signed it)."""
    if root and state.root.signed.is_expired(now):
        expired = state.root.signed
        raise RepositoryError(
            f"root version {expired.version} expired at {expired.expires:%Y-%m-%d %H:%M} UTC: "
            "devices "
            "refuse everything signed under it; sign a new root with `ota keys rotate root`"
        )
    ahead = state.timestamp.signed.expires - now
    if ahead > timestamp_lifetime + CLOCK_TOLERANCE:
        raise RepositoryError(
            f"clock skew: this machine says {now:%Y-%m-%d %H:%M} UTC but the live timestamp "
            f"(version {state.timestamp.signed.version}) expires "
            f"{state.timestamp.signed.expires:%Y-%m-%d %H:%M} UTC, more than a timestamp "
            "lifetime ahead; check this machine's clock (NTP)"
        )
