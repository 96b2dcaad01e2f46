"""Where a role's private keys are: key files, the environment, an HSM or a KMS.

securesystemslib's signers do the signing; this module only finds them for a role:

- `OTA_KEY_<ROLE>` in the environment (PEM, e.g. a CI secret): that role's only key;
- `keys/<role>.pem`, `keys/<role>-<n>.pem`: PKCS8 key files (the default);
- `keys/<role>.key.json`, `keys/<role>-<n>.key.json`: `{"uri": ..., "keyid": ...}` naming a
  key that never leaves its device: `hsm:<id>?label=<token>` (PKCS#11, HSMSigner; the
  library is $PYKCS11LIB, the PIN $OTA_HSM_PIN) or `awskms:<key id or alias>` (AWSSigner,
  boto3's ambient credentials). The public key comes from the metadata that trusts it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer  # type: ignore[attr-defined]

import durable
from signing.errors import KeysError

__all__ = [
    "HSM_PIN_ENV",
    "env_name",
    "import_uri",
    "key_reference_paths",
    "load_uri_signer",
    "signer_from_pem",
    "write_key_reference",
]

HSM_PIN_ENV = "OTA_HSM_PIN"
REFERENCE_SUFFIX = ".key.json"


def env_name(role: str) -> str:
    """`OTA_KEY_<ROLE>`: upper case, anything but letters and digits as `_`."""
    return "OTA_KEY_" + re.sub(r"[^A-Z0-9]", "_", role.upper())


def signer_from_pem(pem: bytes, passphrase: str | None, where: str) -> CryptoSigner:
    """A signer for a PKCS8 PEM private key (decrypted with `passphrase` when it is encrypted)."""
    secret = passphrase.encode() if passphrase else None
    try:
        key = load_pem_private_key(pem, secret)
    except TypeError:
        if secret is None:
            raise KeysError(f"key {where} is encrypted: set OTA_KEY_PASSPHRASE") from None
        key = load_pem_private_key(pem, None)  # not encrypted; the passphrase is not needed
    except (ValueError, UnsupportedAlgorithm):
        raise KeysError(f"cannot load key {where}: wrong passphrase or not a PEM key") from None
    try:
        return CryptoSigner(key)
    except ValueError as exc:
        raise KeysError(f"key {where} is of an unsupported type: {exc}") from None


def env_signer(role: str, passphrase: str | None) -> CryptoSigner | None:
    pem = os.environ.get(env_name(role))
    if not pem:
        return None
    return signer_from_pem(pem.encode(), passphrase, f"${env_name(role)}")


def key_reference_paths(keys_dir: Path, stem: str) -> list[Path]:
    return sorted(keys_dir.glob(f"{stem}{REFERENCE_SUFFIX}")) + sorted(
        keys_dir.glob(f"{stem}-*{REFERENCE_SUFFIX}")
    )


def write_key_reference(path: Path, uri: str, keyid: str) -> None:
    """Record where a role's key lives (no secret in it)."""
    data = json.dumps({"uri": uri, "keyid": keyid}, indent=2).encode()
    durable.create_file(path, data, mode=0o644)


def read_key_reference(path: Path) -> tuple[str, str]:
    try:
        data = json.loads(path.read_bytes())
        return str(data["uri"]), str(data["keyid"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeysError(f"cannot read key reference {path}: {exc}") from None


def load_uri_signer(uri: str, public_key: Any, where: str) -> Signer:
    """securesystemslib's signer for `uri` (hsm:, awskms:, file:...) and its public key."""
    try:
        return Signer.from_priv_key_uri(uri, public_key, _pin)
    except (ValueError, ImportError) as exc:
        raise KeysError(f"cannot use key {uri} ({where}): {exc}") from None


def _pin(secret: str) -> str:
    pin = os.environ.get(HSM_PIN_ENV)
    if not pin:
        raise KeysError(f"the HSM needs its {secret}: set {HSM_PIN_ENV}")
    return pin


def import_uri(uri: str) -> tuple[str, Any]:
    """Ask the HSM or KMS for the public key of `uri`; (the canonical uri, its public Key)."""
    from urllib.parse import parse_qsl, urlparse

    parsed = urlparse(uri)
    try:
        if parsed.scheme == "hsm":
            from securesystemslib.signer import HSMSigner  # type: ignore[attr-defined]

            label = dict(parse_qsl(parsed.query)).get("label")
            keyid = int(parsed.path) if parsed.path else None
            found: tuple[str, Any] = HSMSigner.import_(keyid, label, _pin)
            return found
        if parsed.scheme == "awskms":
            from securesystemslib.signer import AWSSigner  # type: ignore[attr-defined]

            found = AWSSigner.import_(parsed.path)
            return found
    except Exception as exc:  # noqa: BLE001  # PKCS#11, botocore and ValueError all end here
        raise KeysError(f"cannot import key {uri}: {exc}") from None
    raise KeysError(f"unsupported key uri {uri!r}: use hsm:<id>?label=<token> or awskms:<key>")
