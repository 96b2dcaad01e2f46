"""The online roles: what the server may hold and re-sign without any offline key.

Timestamp and snapshot keys live with the server (a key folder with `timestamp.pem` and
`snapshot.pem`, or a KMS). Their metadata is short-lived, so a background job calls
`renew_online_roles` well before it expires. Root and targets keys never leave the release
engineers' machines (or the HSM); nothing here reads them, so the server cannot sign a
release or change who is trusted.
"""

from __future__ import annotations

from pathlib import Path

from signing.keys import KEYS_DIR, load_role_signers
from signing.renew import next_files, roles_to_renew, write_files
from signing.state import check_usable, load_state
from signing.storage import Storage
from signing.tufmeta import ExpiryPolicy, utc_now

__all__ = ["ONLINE", "online_keys_dir", "refresh_timestamp", "renew_online_roles"]

ONLINE = ("snapshot", "timestamp")


def online_keys_dir(repo_dir_or_keys: Path) -> Path:
    """`<repo>/keys` for a release engineer's repository folder, else the folder itself."""
    path = Path(repo_dir_or_keys)
    return path / KEYS_DIR if (path / KEYS_DIR).is_dir() else path


def renew_online_roles(
    storage: Storage,
    online_keys: Path,
    *,
    expiry: ExpiryPolicy | None = None,
    passphrase: str | None = None,
) -> list[str]:
    """Re-sign timestamp (and snapshot when it is due) with the online keys alone.

    Returns the roles re-signed, e.g. ["timestamp"] or ["snapshot", "timestamp"]. Targets
    is never re-signed here: `ota repo status` warns well before it expires.
    """
    roles, _ = _resign(storage, online_keys, expiry or ExpiryPolicy(), passphrase)
    return list(roles)


def refresh_timestamp(
    repo_dir_or_keys: Path,
    storage: Storage,
    *,
    expiry: ExpiryPolicy | None = None,
    passphrase: str | None = None,
) -> list[str]:
    """Sign a new timestamp now (and a new snapshot if it is due); the storage names written."""
    _, written = _resign(storage, repo_dir_or_keys, expiry or ExpiryPolicy(), passphrase)
    return written


def _resign(
    storage: Storage, keys: Path, policy: ExpiryPolicy, passphrase: str | None
) -> tuple[tuple[str, ...], list[str]]:
    state = load_state(storage)
    check_usable(state, utc_now(), policy.lifetime("timestamp"))
    roles = roles_to_renew(state, policy, utc_now())
    keys_dir = online_keys_dir(keys)
    signers = {
        role: load_role_signers(keys_dir, role, state.root.signed, passphrase) for role in roles
    }
    return roles, write_files(storage, next_files(state, roles, signers, policy))
