"""The device's identity: an ed25519 key pair it makes itself at first enrollment, kept
private (0600) in its data directory, and the broker secret the server gave it.

The private key never leaves the device; the server keeps the public key and, from then on,
believes only signatures made with it (docs/decisions/0017-device-identity.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from agent.errors import ConfigError
from durable import atomic_write, ensure_dir
from wire import encode_b64

KEY_FILE: Final = "device_key"
BROKER_SECRET_FILE: Final = "broker_secret"  # noqa: S105  # a file name, not the secret


class DeviceKey:
    """The device's own signing key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> DeviceKey:
        """The key in `path`; ConfigError if it is unreadable or not an ed25519 key."""
        try:
            key = load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the device key {path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"the device key {path} is not an ed25519 key")
        return cls(key)

    @property
    def public_key(self) -> str:
        """The raw public key, URL-safe base64 (what the server stores)."""
        raw = self._private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return encode_b64(raw)

    def sign(self, statement: bytes) -> str:
        return encode_b64(self._private_key.sign(statement))

    def save(self, path: Path) -> None:
        """Written atomically and private (0600)."""
        ensure_dir(path.parent)
        pem = self._private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        atomic_write(path, pem)


def device_key(data_dir: Path) -> DeviceKey | None:
    """The key in `data_dir`, or None before the first enrollment."""
    path = data_dir / KEY_FILE
    return DeviceKey.load(path) if path.exists() else None


def device_key_or_new(data_dir: Path) -> DeviceKey:
    """The key in `data_dir`; a new one, saved there, if there is none yet."""
    key = device_key(data_dir)
    if key is None:
        key = DeviceKey.generate()
        key.save(data_dir / KEY_FILE)
    return key


def save_broker_secret(data_dir: Path, secret: str) -> None:
    ensure_dir(data_dir)
    atomic_write(data_dir / BROKER_SECRET_FILE, secret.encode())  # 0600


def broker_secret(data_dir: Path) -> str:
    """The broker secret kept in `data_dir`, or "" when there is none."""
    try:
        return (data_dir / BROKER_SECRET_FILE).read_text().strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the broker secret in {data_dir}: {exc}") from None
