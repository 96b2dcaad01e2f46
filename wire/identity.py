"""A device's identity on the wire: which device ids are valid, and the exact bytes a device
signs with its own ed25519 key to enroll and to obtain a short-lived access token.

Device ids become broker logins, topic segments and file names, so one rule serves them all:
lowercase letters, digits and `._-`, starting with a letter or digit, at most 63 characters.
Names the server or the broker keep for themselves are refused (`check_device_id`).
Signatures and public keys travel as URL-safe base64; statements are canonical JSON with a
purpose field, so a signature made for one purpose is never valid for another.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Final

from wire.errors import ProtocolError

DEVICE_ID_PATTERN: Final = r"[a-z0-9][a-z0-9._-]{0,62}"
MAX_DEVICE_ID_CHARS: Final = 63
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
# the server's default broker user, the roles' names, and names brokers treat specially
RESERVED_DEVICE_IDS: Final = frozenset(
    {"admin", "server", "ota-server", "root", "broker", "anonymous", "mosquitto", "localhost"}
)
DEVICE_CLIENT_ID_PREFIX: Final = "ota-agent-"  # the agent's MQTT client id: prefix + device id

ENROLL_PURPOSE: Final = "orange-friday/enroll/v1"
TOKEN_PURPOSE: Final = "orange-friday/token/v1"  # noqa: S105  # a label, not a secret
PUBLIC_KEY_BYTES: Final = 32  # a raw ed25519 public key
SIGNATURE_BYTES: Final = 64  # an ed25519 signature


def check_device_id(device_id: str) -> str:
    """`device_id` if every consumer (broker login, topic, file name) accepts it; raises
    ProtocolError naming the rule otherwise."""
    if not _DEVICE_ID.fullmatch(device_id):
        raise ProtocolError(
            f"device id {device_id[:80]!r} must match {DEVICE_ID_PATTERN} "
            "(lowercase letters, digits, '.', '_', '-'; at most 63 characters)"
        )
    if device_id in RESERVED_DEVICE_IDS:
        raise ProtocolError(f"device id {device_id!r} is reserved")
    return device_id


def device_client_id(device_id: str) -> str:
    """The MQTT client id an agent connects with (brokers admit no other for the device)."""
    return DEVICE_CLIENT_ID_PREFIX + device_id


def enroll_statement(
    *, nonce: str, device_id: str, model: str, channel: str, public_key: str
) -> bytes:
    """What a device signs to enroll: the server's nonce, who it is and the key it holds."""
    return _canonical(
        {
            "purpose": ENROLL_PURPOSE,
            "nonce": nonce,
            "device_id": device_id,
            "model": model,
            "channel": channel,
            "public_key": public_key,
        }
    )


def enroll_request(
    *,
    enrollment_token: str,
    nonce: str,
    device_id: str,
    model: str,
    channel: str,
    public_key: str,
    sign: Callable[[bytes], str],
    previous_sign: Callable[[bytes], str] | None = None,
) -> dict[str, str]:
    """The body of an enrollment: who the device is and the key it holds, signed over
    `enroll_statement` by that key (`sign`) and, when it takes over an id enrolled with another
    key, by the old one too (`previous_sign`); each returns base64 of its signature."""
    statement = enroll_statement(
        nonce=nonce, device_id=device_id, model=model, channel=channel, public_key=public_key
    )
    body = {
        "enrollment_token": enrollment_token,
        "device_id": device_id,
        "model": model,
        "channel": channel,
        "nonce": nonce,
        "public_key": public_key,
        "proof": sign(statement),
    }
    if previous_sign is not None:
        body["previous_proof"] = previous_sign(statement)
    return body


def token_statement(*, nonce: str, device_id: str) -> bytes:
    """What a device signs to trade the server's nonce for an access token."""
    return _canonical({"purpose": TOKEN_PURPOSE, "nonce": nonce, "device_id": device_id})


def _canonical(fields: dict[str, str]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def encode_b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_b64(text: str, size: int, what: str) -> bytes:
    """`text` as URL-safe base64 of exactly `size` bytes; raises ProtocolError otherwise."""
    try:
        raw = base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ProtocolError(f"{what} is not URL-safe base64") from None
    if len(raw) != size:
        raise ProtocolError(f"{what} must be {size} bytes, not {len(raw)}")
    return raw
