"""The next signed versions of targets, snapshot and timestamp, and renewing them in time.

Publishing re-signs all three with a new target added. Between publishes the short-lived
roles still expire (timestamp after a day, snapshot after a week by default), so
`renew_metadata` re-signs only what would otherwise expire before its next run, which a
daily job can do with the timestamp key alone on most days. Both write in the same order as
a publish (targets, snapshot, timestamp last): see docs/decisions/0014-signing-publish-order.md.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, MetaFile, TargetFile  # type: ignore[attr-defined]

from signing.keys import default_storage, load_signers
from signing.state import RepoState, check_usable, load_state
from signing.storage import Storage
from signing.tufmeta import (
    ExpiryPolicy,
    metadata_name,
    pin,
    sign_and_serialize,
    timestamp_metadata,
    utc_now,
)

Signers = Mapping[str, Sequence[Signer]]


def next_files(
    state: RepoState,
    roles: Sequence[str],
    signers: Signers,
    policy: ExpiryPolicy,
    target: TargetFile | None = None,
) -> dict[str, bytes]:
    """New signed files for `roles` (a suffix of targets, snapshot, timestamp), in write order.

    `target`, when given, is added to targets; it needs "targets" in `roles`.
    """
    edited: dict[str, bytes] = {}
    if "targets" in roles:
        targets = next_version(state.targets, policy.expires("targets"))
        if target is not None:
            targets.signed.targets[target.path] = target
        edited["targets"] = sign_and_serialize(targets, signers["targets"])
    return release_files(state, edited, signers, policy, snapshot="snapshot" in roles)


def next_version(md: Metadata[Any], expires: datetime) -> Metadata[Any]:
    """A copy of `md` one version up, expiring at `expires`, ready to be edited and signed."""
    new: Metadata[Any] = copy.deepcopy(md)
    new.signed.version += 1
    new.signed.expires = expires
    new.signatures.clear()
    return new


def release_files(
    state: RepoState,
    edited: Mapping[str, bytes],
    signers: Signers,
    policy: ExpiryPolicy,
    *,
    snapshot: bool = True,
) -> dict[str, bytes]:
    """The files that make `edited` (signed targets-type roles by name) live, in write order:
    each edited role, then a new snapshot naming them (when `snapshot` or anything was
    edited), then timestamp.json last."""
    now = utc_now()
    files: dict[str, bytes] = {}
    versions: dict[str, int] = {}
    for name, data in edited.items():
        version = Metadata.from_bytes(data).signed.version
        files[metadata_name(name, version)] = data
        versions[name] = version
    snapshot_meta = state.timestamp.signed.snapshot_meta
    if snapshot or edited:
        new = next_version(state.snapshot, policy.expires("snapshot", now))
        for name, version in versions.items():
            new.signed.meta[f"{name}.json"] = MetaFile(version=version)
        data = sign_and_serialize(new, signers["snapshot"])
        files[metadata_name("snapshot", new.signed.version)] = data
        snapshot_meta = pin(new.signed.version, data)
    version = state.timestamp.signed.version + 1
    timestamp = timestamp_metadata(version, snapshot_meta, policy.expires("timestamp", now))
    files[metadata_name("timestamp")] = sign_and_serialize(timestamp, signers["timestamp"])
    return files


def roles_to_renew(
    state: RepoState, policy: ExpiryPolicy, now: datetime, *, offline: bool = False
) -> tuple[str, ...]:
    """Always timestamp; snapshot too when it would expire before the new timestamp does;
    targets too (only when `offline` keys are at hand) when it would expire before a new
    snapshot does."""
    if offline and state.targets.signed.expires <= policy.expires("snapshot", now):
        return ("targets", "snapshot", "timestamp")
    if state.snapshot.signed.expires <= policy.expires("timestamp", now):
        return ("snapshot", "timestamp")
    return ("timestamp",)


def renew_metadata(
    repo_dir: Path,
    *,
    storage: Storage | None = None,
    passphrase: str | None = None,
    expiry: ExpiryPolicy | None = None,
    offline: bool = False,
) -> list[str]:
    """Re-sign what is about to expire so devices keep trusting the live releases.

    By default only the online roles (timestamp, and snapshot when it is due), which the
    server's keys can do; `offline=True` also re-signs targets when it is due (needs the
    targets key). Returns the storage names written (timestamp.json last).
    """
    policy = expiry or ExpiryPolicy()
    store = storage if storage is not None else default_storage(repo_dir)
    state = load_state(store)
    check_usable(state, utc_now(), policy.lifetime("timestamp"))
    roles = roles_to_renew(state, policy, utc_now(), offline=offline)
    signers = {role: load_signers(repo_dir, role, state.root.signed, passphrase) for role in roles}
    return write_files(store, next_files(state, roles, signers, policy))


def write_files(storage: Storage, files: dict[str, bytes]) -> list[str]:
    """Write `files` in their order (timestamp.json comes last) and return their names."""
    for name, data in files.items():
        storage.put_bytes(name, data)
    return list(files)
