"""`ota keys add-channel`: give a channel its own delegated role and keys before its first
release (a first publish on a new channel does the same with one key)."""

from __future__ import annotations

from pathlib import Path

from signing.delegation import plan_channel
from signing.keys import KEYS_DIR, RoleKeys, default_storage, generate_signers, new_key_files
from signing.renew import write_files
from signing.repo import sign_plan_files
from signing.state import check_usable, load_state
from signing.storage import Storage
from signing.tufmeta import ExpiryPolicy, utc_now

__all__ = ["add_channel"]


def add_channel(
    repo_dir: Path,
    channel: str,
    *,
    keys: RoleKeys | None = None,
    storage: Storage | None = None,
    passphrase: str | None = None,
    expiry: ExpiryPolicy | None = None,
) -> list[Path]:
    """Delegate `channel` to a new role with `keys` (k of n, fresh key files); return them.

    Needs the top-level targets keys (offline) and the online snapshot and timestamp keys.
    """
    layout = keys or RoleKeys()
    layout.check(channel)
    policy = expiry or ExpiryPolicy()
    store = storage if storage is not None else default_storage(repo_dir)
    state = load_state(store)
    check_usable(state, utc_now(), policy.lifetime("timestamp"))
    signers = {channel: generate_signers(layout.count)}
    public = [s.public_key for s in signers[channel]]
    plan = plan_channel(state, channel, public, layout.threshold, policy.expires("targets"))
    keys_dir = Path(repo_dir) / KEYS_DIR
    files = sign_plan_files(plan, keys_dir, signers, passphrase, policy)
    with new_key_files(keys_dir, signers, passphrase):
        write_files(store, files)
    return sorted(keys_dir.glob(f"{channel}*.pem"))
