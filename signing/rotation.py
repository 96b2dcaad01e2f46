"""`ota keys rotate ROLE [--revoke KEYID]`: replace a role's key, for every role, root included.

A top-level role's keys live in root, so rotating one writes root N+1, signed by a threshold
of root N's keys and a threshold of N+1's (the spec's root chain: a device provisioned with
any older root walks N.root.json upwards and checks both). The role whose key changed is then
re-signed with the new key (targets, snapshot, timestamp: whichever it is, and those that
pin it), timestamp.json last. A channel's keys live in top-level targets' delegation, so
rotating one re-signs targets, the channel role and its hashed bins.

The replaced key is revoked: nothing it signs afterwards verifies. Its file moves to
`keys/retired/`; the new key takes its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata

import durable
from signing.delegation import Plan
from signing.errors import KeysError
from signing.keys import (
    KEYS_DIR,
    TRUSTED_ROOT,
    default_storage,
    generate_signers,
    load_role_signers,
    load_signer,
    write_private_key,
)
from signing.renew import next_version, release_files, write_files
from signing.signers import (
    REFERENCE_SUFFIX,
    import_uri,
    key_reference_paths,
    load_uri_signer,
    read_key_reference,
    write_key_reference,
)
from signing.staging import tally
from signing.state import RepoState, check_usable, load_state
from signing.storage import LocalStorage, Storage
from signing.tufmeta import (
    TOP_LEVEL_ROLES,
    ExpiryPolicy,
    add_signature,
    metadata_name,
    serialize,
    utc_now,
)

__all__ = ["Rotation", "rotate_key"]

RETIRED_DIR = "retired"


@dataclass(frozen=True)
class Rotation:
    role: str
    revoked: str  # key id
    added: str  # key id
    key_file: Path
    written: tuple[str, ...]


def rotate_key(
    repo_dir: Path,
    role: str,
    *,
    revoke: str | None = None,
    storage: Storage | None = None,
    passphrase: str | None = None,
    expiry: ExpiryPolicy | None = None,
    to_uri: str | None = None,
) -> Rotation:
    """Replace `revoke` (a key id or a unique prefix of 8+ characters; optional when the role
    has one key) with a fresh key file, or with the HSM/KMS key `to_uri` (hsm:..., awskms:...);
    return what changed. The repository is unchanged on error."""
    repo_dir = Path(repo_dir)
    store = storage if storage is not None else default_storage(repo_dir)
    policy = expiry or ExpiryPolicy()
    state = load_state(store)
    check_usable(state, utc_now(), policy.lifetime("timestamp"), root=False)
    delegator = _delegator(state, role)
    old = _old_keyid(list(delegator.get_delegated_role(role).keyids), role, revoke)
    new, uri = _replacement(to_uri)
    keys_dir = repo_dir / KEYS_DIR
    if role in TOP_LEVEL_ROLES:
        files = _rotate_top_level(state, role, old, new, keys_dir, passphrase, policy)
    else:
        files = _rotate_channel(state, role, old, new, keys_dir, passphrase, policy)
    key_file = _swap_key_files(keys_dir, role, old, (new, uri), passphrase, store, files)
    if role == "root":
        LocalStorage(repo_dir).put_bytes(TRUSTED_ROOT, next(iter(files.values())))
    return Rotation(role, old, new.public_key.keyid, key_file, tuple(files))


def _replacement(to_uri: str | None) -> tuple[Signer, str | None]:
    if to_uri is None:
        return generate_signers(1)[0], None
    uri, public_key = import_uri(to_uri)
    return load_uri_signer(uri, public_key, to_uri), uri


def _delegator(state: RepoState, role: str) -> Any:
    if role in TOP_LEVEL_ROLES:
        return state.root.signed
    channels = state.targets.signed.delegations
    if channels is None or role not in (channels.roles or {}):
        known = ", ".join([*TOP_LEVEL_ROLES, *sorted((channels.roles or {}) if channels else {})])
        raise KeysError(f"unknown role {role!r}: the roles are {known}")
    return state.targets.signed


def _old_keyid(keyids: list[str], role: str, revoke: str | None) -> str:
    if revoke is None:
        if len(keyids) != 1:
            raise KeysError(f"{role} has {len(keyids)} keys: say which to replace with --revoke")
        return keyids[0]
    matches = [k for k in keyids if len(revoke) >= 8 and k.startswith(revoke.lower())]
    if len(matches) != 1:
        shown = ", ".join(k[:12] for k in keyids)
        raise KeysError(f"{revoke!r} is not a key id of {role} (its keys: {shown})")
    return matches[0]


def _rotate_top_level(
    state: RepoState,
    role: str,
    old: str,
    new: Signer,
    keys_dir: Path,
    passphrase: str | None,
    policy: ExpiryPolicy,
) -> dict[str, bytes]:
    """root N+1 with the key swapped, then the role re-signed with it (and what pins it)."""
    root = next_version(state.root, policy.expires("root"))
    root.signed.revoke_key(old, role)
    root.signed.add_key(new.public_key, role)
    root_signers = load_role_signers(keys_dir, "root", state.root.signed, passphrase)
    if role == "root":
        root_signers = [*root_signers, new]
    for signer in root_signers:
        add_signature(root, signer)
    _check_root(state, root)
    files = {metadata_name("root", root.signed.version): serialize(root)}
    if role == "root":
        return files
    signers = {
        r: ([new] if r == role else load_role_signers(keys_dir, r, root.signed, passphrase))
        for r in ("snapshot", "timestamp")
    }
    edited = {}
    if role == "targets":
        targets = next_version(state.targets, policy.expires("targets"))
        add_signature(targets, new)
        _check(root.signed, "targets", targets)
        edited["targets"] = serialize(targets)
    more = release_files(state, edited, signers, policy, snapshot=role == "snapshot")
    return files | more


def _check_root(state: RepoState, root: Metadata[Any]) -> None:
    """Root N+1 needs a threshold of root N's keys and a threshold of its own."""
    for trusted, which in ((state.root.signed, "old"), (root.signed, "new")):
        count, threshold = tally(trusted, "root", root)
        if count < threshold:
            raise KeysError(
                f"root version {root.signed.version} needs {threshold} signatures of the {which} "
                f"root keys and the keys at hand make {count}"
            )


def _check(delegator: Any, role: str, md: Metadata[Any]) -> None:
    count, threshold = tally(delegator, role, md)
    if count < threshold:
        raise KeysError(f"{role} needs {threshold} signatures and the keys at hand make {count}")


def _rotate_channel(
    state: RepoState,
    channel: str,
    old: str,
    new: Signer,
    keys_dir: Path,
    passphrase: str | None,
    policy: ExpiryPolicy,
) -> dict[str, bytes]:
    """targets N+1 delegating to the new key, the channel (and its bins) re-signed with it."""
    plan = Plan(state)
    targets = plan.edit("targets", policy.expires("targets"))
    targets.signed.revoke_key(old, channel)
    targets.signed.add_key(new.public_key, channel)
    kept = [
        s
        for s in load_role_signers(keys_dir, channel, state.targets.signed, passphrase)
        if s.public_key.keyid != old
    ]
    md = plan.edit(channel, policy.expires("targets"))
    plan.delegators[channel] = targets.signed
    bins = md.signed.delegations.succinct_roles if md.signed.delegations else None
    if bins is not None:
        md.signed.revoke_key(old)
        md.signed.add_key(new.public_key)
        for name in bins.get_roles():
            plan.edit(name, policy.expires("targets"))
            plan.delegators[name] = md.signed
    sign = {"targets": load_role_signers(keys_dir, "targets", state.root.signed, passphrase)}
    edited = {}
    for name, role_md in plan.edits.items():
        for signer in sign.get(name, [*kept, new]):
            add_signature(role_md, signer)
        _check(plan.delegators[name], name, role_md)
        edited[name] = serialize(role_md)
    online = {
        r: load_role_signers(keys_dir, r, state.root.signed, passphrase)
        for r in ("snapshot", "timestamp")
    }
    return release_files(state, edited, online, policy)


def _swap_key_files(
    keys_dir: Path,
    role: str,
    old: str,
    replacement: tuple[Signer, str | None],
    passphrase: str | None,
    storage: Storage,
    files: dict[str, bytes],
) -> Path:
    """Write the new key (or the reference to it) next to the others, publish `files`, then
    retire the old key file."""
    new, uri = replacement
    suffix = ".pem" if uri is None else REFERENCE_SUFFIX
    old_path = _find_key_file(keys_dir, role, old, passphrase)
    staging = keys_dir / f".{role}.new{suffix}"
    staging.unlink(missing_ok=True)
    try:
        if isinstance(new, CryptoSigner):
            write_private_key(staging, new, passphrase)
        else:
            write_key_reference(staging, str(uri), new.public_key.keyid)
        write_files(storage, files)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    if old_path is not None:
        retired = keys_dir / RETIRED_DIR
        durable.ensure_dir(retired, mode=0o700)
        durable.replace(old_path, retired / f"{role}-{old[:16]}{''.join(old_path.suffixes)}")
    dest = _free_name(keys_dir, role, new.public_key.keyid, suffix)
    if old_path is not None and "".join(old_path.suffixes) == suffix:
        dest = old_path
    durable.replace(staging, dest)
    return dest


def _find_key_file(keys_dir: Path, role: str, keyid: str, passphrase: str | None) -> Path | None:
    for path in sorted(keys_dir.glob(f"{role}.pem")) + sorted(keys_dir.glob(f"{role}-*.pem")):
        if load_signer(path, passphrase).public_key.keyid == keyid:
            return path
    for path in key_reference_paths(keys_dir, role):
        if read_key_reference(path)[1] == keyid:
            return path
    return None


def _free_name(keys_dir: Path, role: str, keyid: str, suffix: str) -> Path:
    """`<role><suffix>` when the role has no other key file, else `<role>-<key id><suffix>`."""
    taken = list(keys_dir.glob(f"{role}.*")) + list(keys_dir.glob(f"{role}-*"))
    if not taken:
        return keys_dir / f"{role}{suffix}"
    return keys_dir / f"{role}-{keyid[:8]}{suffix}"
