"""Split signing: a release waits, invisible to devices, until enough keys have signed it.

A staged release is the next version of one targets-type role, signed by the keys the first
engineer holds, stored as `staged/<role>.json`. Clients never read `staged/`: only metadata
that snapshot and timestamp name is live. `sign_staged` adds one signature; once the role's
threshold is met it writes the role's metadata, then snapshot, then timestamp.json last (the
publish order, docs/decisions/0014-signing-publish-order.md). A proposal whose base has moved on
(someone published in between) is refused as stale instead of hiding that publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata
from tuf.api.serialization import DeserializationError

from signing.errors import SigningError
from signing.keys import KEYS_DIR, check_trusted, load_role_signers, load_signer
from signing.renew import release_files, write_files
from signing.state import RepoState, check_usable, load_state
from signing.storage import Storage
from signing.tufmeta import ExpiryPolicy, add_signature, serialize, utc_now

__all__ = ["StagedRole", "StagingError", "sign_staged", "staged_name", "tally"]

STAGED_DIR = "staged"


class StagingError(SigningError):
    """No proposal to sign, a stale one, or one that does not check out."""


@dataclass(frozen=True)
class StagedRole:
    """Where a proposal stands: `signed` of `threshold` signatures; `live` once published."""

    role: str
    version: int
    signed: int
    threshold: int
    live: bool
    new_targets: tuple[str, ...]


def staged_name(role: str) -> str:
    return f"{STAGED_DIR}/{role}.json"


def tally(delegator: Any, role: str, proposal: Metadata[Any]) -> tuple[int, int]:
    """(valid signatures by `role`'s keys, its threshold) for `proposal`."""
    result = delegator.get_verification_result(role, proposal.signed_bytes, proposal.signatures)
    return len(result.signed), int(result.threshold)


def sign_staged(
    repo_dir: Path,
    key: Path,
    *,
    storage: Storage,
    role: str | None = None,
    passphrase: str | None = None,
    expiry: ExpiryPolicy | None = None,
) -> StagedRole:
    """Add `key`'s signature to the pending proposal; publish it when the threshold is met."""
    state = load_state(storage)
    policy = expiry or ExpiryPolicy()
    check_usable(state, utc_now(), policy.lifetime("timestamp"))
    name, proposal = _pending(state, storage, role)
    signer = load_signer(key, passphrase)
    check_trusted(signer.public_key.keyid, name, state.delegator(name), str(key))
    add_signature(proposal, signer)
    signed, threshold = tally(state.delegator(name), name, proposal)
    new = tuple(sorted(set(proposal.signed.targets) - set(state.role(name).signed.targets)))
    if signed < threshold:
        storage.put_bytes(staged_name(name), serialize(proposal))
        return StagedRole(name, proposal.signed.version, signed, threshold, False, new)
    online = {
        r: load_role_signers(Path(repo_dir) / KEYS_DIR, r, state.root.signed, passphrase)
        for r in ("snapshot", "timestamp")
    }
    files = release_files(state, {name: serialize(proposal)}, online, policy)
    write_files(storage, files)
    return StagedRole(name, proposal.signed.version, signed, threshold, True, new)


def _pending(state: RepoState, storage: Storage, role: str | None) -> tuple[str, Metadata[Any]]:
    candidates = [role] if role else ["targets", *sorted(state.delegated)]
    found = {}
    for name in candidates:
        live = state.role(name).signed.version
        data = storage.get_bytes(staged_name(name))
        if data is None:
            continue
        proposal = _parse(data, name)
        if proposal.signed.version == live + 1:
            found[name] = proposal
        elif role:
            raise StagingError(
                f"{staged_name(name)} is stale: it proposes {name} version "
                f"{proposal.signed.version} but version {live} is live; stage it again"
            )
    if not found:
        raise StagingError(f"nothing is waiting for signatures in {storage!r}")
    if len(found) > 1:
        raise StagingError(f"several roles wait for signatures ({', '.join(found)}): use --role")
    return next(iter(found.items()))


def _parse(data: bytes, role: str) -> Metadata[Any]:
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except DeserializationError as exc:
        raise StagingError(f"{staged_name(role)} is not valid TUF metadata: {exc}") from None
    if md.signed.type != "targets":
        raise StagingError(f"{staged_name(role)} holds {md.signed.type} metadata, not targets")
    return md
