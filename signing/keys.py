"""Signing keys and the repository's first metadata.

`init_keys` makes ed25519 keys for the four top-level roles, writes them as PKCS8 PEM files
(mode 0600, encrypted when a passphrase is given), signs version 1 of every role with
python-tuf's Metadata API and writes it to the storage, and leaves the root that devices are
provisioned with at `<repo_dir>/root.json`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.signer import CryptoSigner, Signer  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, Root, Targets  # type: ignore[attr-defined]

import durable
from signing.errors import KeysError
from signing.signers import (
    env_name,
    env_signer,
    key_reference_paths,
    load_uri_signer,
    read_key_reference,
    signer_from_pem,
)
from signing.storage import LocalStorage, Storage
from signing.tufmeta import (
    TOP_LEVEL_ROLES,
    ExpiryPolicy,
    metadata_name,
    pin,
    sign_and_serialize,
    snapshot_metadata,
    timestamp_metadata,
    utc_now,
)

__all__ = [
    "ExpiryPolicy",
    "KeysError",
    "RoleKeys",
    "default_storage",
    "init_keys",
    "key_paths",
    "load_role_signers",
    "load_signer",
    "load_signers",
]

KEYS_DIR = "keys"
TRUSTED_ROOT = "root.json"


def default_storage(repo_dir: Path) -> Storage:
    """Where the repository's metadata and targets live unless told otherwise."""
    return LocalStorage(Path(repo_dir) / "repository")


def key_paths(repo_dir: Path, role: str, count: int = 1) -> list[Path]:
    """`keys/<role>.pem` for a single key, `keys/<role>-<n>.pem` (n from 1) for several."""
    keys = Path(repo_dir) / KEYS_DIR
    if count == 1:
        return [keys / f"{role}.pem"]
    return [keys / f"{role}-{n}.pem" for n in range(1, count + 1)]


# --------------------------------------------------------------------------- init


@dataclass(frozen=True)
class RoleKeys:
    """How many keys a role has and how many of them must sign (k of n)."""

    count: int = 1
    threshold: int = 1

    def check(self, role: str) -> None:
        if not 1 <= self.threshold <= self.count:
            raise KeysError(
                f"{role} threshold {self.threshold} must be between 1 and the number of "
                f"{role} keys ({self.count})"
            )


def init_keys(
    repo_dir: Path,
    *,
    root_threshold: int = 1,
    root_keys: int = 1,
    passphrase: str | None = None,
    storage: Storage | None = None,
    expiry: ExpiryPolicy | None = None,
    layout: Mapping[str, RoleKeys] | None = None,
) -> Path:
    """Create keys and version 1 of all metadata; return the path of the trusted root.

    `layout` gives any top-level role k-of-n keys; `root_keys`/`root_threshold` are the
    shorthand for root's.
    """
    repo_dir = Path(repo_dir)
    roles = {role: RoleKeys() for role in TOP_LEVEL_ROLES}
    roles["root"] = RoleKeys(root_keys, root_threshold)
    roles.update(layout or {})
    for role, keys in roles.items():
        keys.check(role)
    store = storage if storage is not None else default_storage(repo_dir)
    _refuse_existing(repo_dir, store)
    signers = {role: _generate(keys.count) for role, keys in roles.items()}
    thresholds = {role: keys.threshold for role, keys in roles.items()}
    files = _initial_metadata(signers, thresholds, expiry or ExpiryPolicy())
    with _staged_keys(repo_dir, signers, passphrase):
        for name, data in files.items():
            store.put_bytes(name, data)
    trusted = repo_dir / TRUSTED_ROOT
    LocalStorage(repo_dir).put_bytes(TRUSTED_ROOT, files[metadata_name("root", 1)])
    return trusted


def generate_signers(count: int) -> list[CryptoSigner]:
    """`count` fresh ed25519 keys."""
    return _generate(count)


def _generate(count: int) -> list[CryptoSigner]:
    return [CryptoSigner.generate_ed25519() for _ in range(count)]


def _refuse_existing(repo_dir: Path, storage: Storage) -> None:
    found = [str(path) for path in (repo_dir / KEYS_DIR, repo_dir / TRUSTED_ROOT) if path.exists()]
    if storage.exists(metadata_name("root", 1)):
        found.append(f"{metadata_name('root', 1)} in {storage!r}")
    if found:
        raise KeysError(
            f"refusing to create new keys: {', '.join(found)} already exist(s); "
            "a repository is initialised once"
        )


def _initial_metadata(
    signers: dict[str, list[CryptoSigner]], thresholds: dict[str, int], expiry: ExpiryPolicy
) -> dict[str, bytes]:
    """Signed version 1 of every role, in write order (root last: it marks 'initialised')."""
    now = utc_now()
    root = Root(expires=expiry.expires("root", now), consistent_snapshot=True)
    for role, role_signers in signers.items():
        for signer in role_signers:
            root.add_key(signer.public_key, role)
    for role, threshold in thresholds.items():
        root.roles[role].threshold = threshold
    targets = Metadata(Targets(expires=expiry.expires("targets", now)))
    snapshot = snapshot_metadata(1, 1, expiry.expires("snapshot", now))
    snapshot_bytes = sign_and_serialize(snapshot, signers["snapshot"])
    timestamp = timestamp_metadata(1, pin(1, snapshot_bytes), expiry.expires("timestamp", now))
    return {
        metadata_name("targets", 1): sign_and_serialize(targets, signers["targets"]),
        metadata_name("snapshot", 1): snapshot_bytes,
        metadata_name("timestamp"): sign_and_serialize(timestamp, signers["timestamp"]),
        metadata_name("root", 1): sign_and_serialize(Metadata(root), signers["root"]),
    }


# --------------------------------------------------------------------------- key files


@contextlib.contextmanager
def _staged_keys(
    repo_dir: Path, signers: dict[str, list[CryptoSigner]], passphrase: str | None
) -> Iterator[None]:
    """Write the keys into a private staging folder; it becomes `keys/` only if the body
    (writing the metadata) succeeds, otherwise it is removed."""
    try:
        durable.ensure_dir(repo_dir)
        staging = Path(tempfile.mkdtemp(prefix=".keys-", dir=repo_dir))
    except OSError as exc:
        raise KeysError(f"cannot create a key folder in {repo_dir}: {exc.strerror}") from exc
    try:
        for role, role_signers in signers.items():
            paths = key_paths(staging, role, len(role_signers))
            for signer, path in zip(role_signers, paths, strict=True):
                write_private_key(staging / path.name, signer, passphrase)
        yield
        durable.replace(staging, repo_dir / KEYS_DIR)
    except OSError as exc:
        raise KeysError(f"cannot write keys into {repo_dir}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_private_key(path: Path, signer: CryptoSigner, passphrase: str | None) -> None:
    """PKCS8 PEM, mode 0600, encrypted with `passphrase` when given; never over a file."""
    pem = signer.private_bytes  # PKCS8 PEM, not encrypted
    if passphrase:
        encryption = BestAvailableEncryption(passphrase.encode())
        key = load_pem_private_key(pem, None)
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    durable.create_file(path, pem, mode=0o600)


def load_signer(path: Path, passphrase: str | None = None) -> CryptoSigner:
    """A signer for the PKCS8 PEM key at `path` (decrypted with `passphrase`)."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeysError(f"cannot read key {path}: {exc.strerror or exc}") from exc
    return signer_from_pem(pem, passphrase, str(path))


def load_signers(
    repo_dir: Path, role: str, root: Root, passphrase: str | None = None
) -> list[Signer]:
    """The role's signers from `<repo_dir>/keys/`, each checked to be a key `root` trusts."""
    return load_role_signers(Path(repo_dir) / KEYS_DIR, role, root, passphrase)


def load_role_signers(
    keys_dir: Path,
    role: str,
    delegator: Root | Targets,
    passphrase: str | None = None,
    *,
    files: str | None = None,
) -> list[Signer]:
    """The role's signers, each checked to be a key `delegator` (root, or the targets role
    delegating `role`) trusts for it: `$OTA_KEY_<ROLE>` if set, else the key files and key
    references (HSM, KMS) in `keys_dir` named `<files>` (default `role`; hashed bins use their
    channel's). See signing/signers.py."""
    stem = files or role
    from_env = env_signer(stem, passphrase)
    if from_env is not None:
        check_trusted(from_env.public_key.keyid, role, delegator, f"${env_name(stem)}")
        return [from_env]
    keys_dir = Path(keys_dir)
    paths = sorted(keys_dir.glob(f"{stem}.pem")) + sorted(keys_dir.glob(f"{stem}-*.pem"))
    references = key_reference_paths(keys_dir, stem)
    if not paths and not references:
        raise KeysError(f"no {stem} key in {keys_dir} or ${env_name(stem)}")
    signers: list[Signer] = []
    for path in paths:
        signer = load_signer(path, passphrase)
        check_trusted(signer.public_key.keyid, role, delegator, str(path))
        signers.append(signer)
    for path in references:
        uri, keyid = read_key_reference(path)
        check_trusted(keyid, role, delegator, str(path))
        signers.append(load_uri_signer(uri, delegator.get_key(keyid), str(path)))
    return signers


@contextlib.contextmanager
def new_key_files(
    keys_dir: Path, signers: Mapping[str, list[CryptoSigner]], passphrase: str | None
) -> Iterator[None]:
    """Write new roles' keys into `keys_dir` (never over an existing file); remove them again
    if the body (publishing the metadata that trusts them) fails."""
    written: list[Path] = []
    try:
        for role, role_signers in signers.items():
            for signer, path in zip(
                role_signers, key_paths(keys_dir.parent, role, len(role_signers)), strict=True
            ):
                write_private_key(path, signer, passphrase)
                written.append(path)
        yield
    except BaseException as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise KeysError(f"refusing to overwrite key {exc.filename}") from None
        if isinstance(exc, OSError):
            raise KeysError(f"cannot write keys into {keys_dir}: {exc.strerror or exc}") from exc
        raise


def check_trusted(keyid: str, role: str, delegator: Root | Targets, what: str) -> None:
    """KeysError unless `delegator` lists `keyid` among `role`'s keys."""
    if keyid not in delegator.get_delegated_role(role).keyids:
        raise KeysError(
            f"key {what} (keyid {keyid[:12]}) is not a {role} key of "
            f"{delegator.type} version {delegator.version}"
        )
