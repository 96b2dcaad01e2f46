"""Proof that a caller holds a device's key: single-use challenges, ed25519 signatures, and
the short-lived access tokens a signed challenge buys.

A challenge is a random nonce stored for one device id until it expires; taking it deletes
it in its own transaction, so it is spent whether or not the signature that follows verifies
(a replay always finds nothing). An access token is stored as its sha256 only and expires;
every token of a device dies when its key changes or an admin resets it.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.api_models import Challenge, DeviceAccess
from server.errors import ForbiddenError, InvalidInputError, NotAuthenticatedError
from server.models import Device, DeviceChallenge, DeviceToken, utcnow
from server.services.devices import hash_credential
from wire import ProtocolError, check_device_id, decode_b64, token_statement
from wire.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES

NONCE_BYTES: Final = 32
TOKEN_BYTES: Final = 32
MAX_OPEN_CHALLENGES: Final = 8  # per device id; older ones are dropped


def valid_device_id(device_id: str) -> str:
    """`device_id` if it follows the wire rule; 422 otherwise."""
    try:
        return check_device_id(device_id)
    except ProtocolError as exc:
        raise InvalidInputError(str(exc)) from None


def check_public_key(public_key: str) -> str:
    """A raw ed25519 public key in URL-safe base64; 422 otherwise."""
    try:
        Ed25519PublicKey.from_public_bytes(decode_b64(public_key, PUBLIC_KEY_BYTES, "public_key"))
    except (ProtocolError, ValueError) as exc:
        raise InvalidInputError(f"public_key: {exc}") from None
    return public_key


def signature_verifies(public_key: str, statement: bytes, signature: str) -> bool:
    """True when `signature` is `public_key`'s over `statement`; False for anything else."""
    try:
        key = Ed25519PublicKey.from_public_bytes(
            decode_b64(public_key, PUBLIC_KEY_BYTES, "public key")
        )
        key.verify(decode_b64(signature, SIGNATURE_BYTES, "signature"), statement)
    except (ProtocolError, ValueError, InvalidSignature):
        return False
    return True


# ---------------------------------------------------------------------- challenges


def issue_challenge(session: Session, device_id: str, ttl_s: float) -> Challenge:
    """A fresh nonce for `device_id` (enrolled or about to be), stored until `ttl_s` passes."""
    valid_device_id(device_id)
    now = utcnow()
    session.execute(delete(DeviceChallenge).where(DeviceChallenge.expires_at <= now))
    _drop_oldest_challenges(session, device_id)
    row = DeviceChallenge(
        nonce=secrets.token_urlsafe(NONCE_BYTES),
        device_id=device_id,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    session.add(row)
    session.commit()
    return Challenge(device_id=device_id, nonce=row.nonce, expires_at=row.expires_at)


def _drop_oldest_challenges(session: Session, device_id: str) -> None:
    """Keep fewer than MAX_OPEN_CHALLENGES for one id: asking again and again grows nothing."""
    newest_first = select(DeviceChallenge.nonce).where(DeviceChallenge.device_id == device_id)
    nonces = list(session.scalars(newest_first.order_by(DeviceChallenge.expires_at.desc())))
    stale = nonces[MAX_OPEN_CHALLENGES - 1 :]
    if stale:
        session.execute(delete(DeviceChallenge).where(DeviceChallenge.nonce.in_(stale)))


def take_challenge(session: Session, device_id: str, nonce: str) -> None:
    """Spend `nonce` for `device_id` (committed at once); 401 if it is unknown, for another
    device, used already or expired."""
    spent = session.execute(
        delete(DeviceChallenge).where(
            DeviceChallenge.nonce == nonce,
            DeviceChallenge.device_id == device_id,
            DeviceChallenge.expires_at > utcnow(),
        )
    )
    session.commit()
    if getattr(spent, "rowcount", 0) != 1:
        raise NotAuthenticatedError("unknown, used or expired challenge: GET a new one and sign it")


# ---------------------------------------------------------------------- access tokens


def issue_device_token(session: Session, device_id: str, ttl_s: float) -> DeviceAccess:
    """A new access token for `device_id` (the caller commits); expired ones are dropped."""
    now = utcnow()
    session.execute(
        delete(DeviceToken).where(DeviceToken.device_id == device_id, DeviceToken.expires_at <= now)
    )
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires_at = now + timedelta(seconds=ttl_s)
    session.add(
        DeviceToken(
            device_id=device_id,
            token_hash=hash_credential(token),
            created_at=now,
            expires_at=expires_at,
        )
    )
    return DeviceAccess(device_id=device_id, token=token, expires_at=expires_at, expires_in_s=ttl_s)


def revoke_device_tokens(session: Session, device_id: str) -> None:
    """Every access token of `device_id` stops working (the caller commits)."""
    session.execute(delete(DeviceToken).where(DeviceToken.device_id == device_id))


def device_of_token(session: Session, token_digest: str) -> str | None:
    """The device an unexpired access token (given as its sha256) belongs to, or None."""
    return session.scalar(
        select(DeviceToken.device_id).where(
            DeviceToken.token_hash == token_digest, DeviceToken.expires_at > utcnow()
        )
    )


def sign_in(
    session: Session, device_id: str, nonce: str, signature: str, ttl_s: float
) -> DeviceAccess:
    """Trade a challenge signed with the device's enrolled key for an access token; 401 for
    an unknown device, a device without a key, a spent challenge or a bad signature."""
    valid_device_id(device_id)
    take_challenge(session, device_id, nonce)
    device = session.get(Device, device_id)
    if device is None or device.public_key is None:
        raise NotAuthenticatedError(f"device {device_id!r} is not enrolled with a key")
    statement = token_statement(nonce=nonce, device_id=device_id)
    if not signature_verifies(device.public_key, statement, signature):
        raise NotAuthenticatedError("the signature is not the device's key's over the challenge")
    access = issue_device_token(session, device_id, ttl_s)
    session.commit()
    return access


def authenticate_device(session: Session, device_id: str, token: str) -> Device:
    """The device an access token belongs to, if that is `device_id`; 401 for none, an
    unknown or an expired one, 403 for another device's (the dashboard's join form takes
    one: `ota-agent access-token` prints a fresh one)."""
    if not token:
        raise NotAuthenticatedError("missing device access token (ota-agent access-token)")
    owner = device_of_token(session, hash_credential(token))
    if owner is None:
        raise NotAuthenticatedError("unknown or expired device access token")
    if owner != device_id:
        raise ForbiddenError(f"this access token is not one of device {device_id!r}")
    return session.get_one(Device, owner)
