"""Enrollment bound to a key the device holds, the admin's reset, the broker secret, and the
device audit that records each of them.

A device id belongs to the key it first enrolled with. Enrolling it again takes a request
signed by that key (the same key again, or `previous_proof` for a new one); the enrollment
token alone is a 409, and the real device keeps working. Only an admin's reset (audited, with
a reason) opens the id to a fresh enrollment. See docs/decisions/0017-device-identity.md.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.api_models import BrokerSecret, DeviceAuditEntry, Enrolled
from server.errors import ConflictError, InvalidInputError, NotAuthenticatedError, NotFoundError
from server.models import Device, DeviceAudit, utcnow
from server.mosquitto import hash_password
from server.schemas import EnrollRequest
from server.services.device_keys import (
    check_public_key,
    issue_device_token,
    revoke_device_tokens,
    signature_verifies,
    take_challenge,
)
from server.services.enrollment_tokens import EnrollmentGrant, check_enrollment_token, spend
from wire import enroll_statement

log = logging.getLogger(__name__)

BROKER_SECRET_BYTES: Final = 32


@dataclass(frozen=True)
class EnrollmentPolicy:
    """What the settings say about enrolling: the fleet token, names kept for the server's
    own broker login, and how long an access token lives."""

    fleet_token: str
    token_ttl_s: float
    reserved_ids: Collection[str] = field(default_factory=frozenset)


def enroll_device(session: Session, request: EnrollRequest, policy: EnrollmentPolicy) -> Enrolled:
    """Enroll (or, with the old key, re-enroll) `request.device_id` with the key it proves."""
    grant = check_enrollment_token(
        session, request.enrollment_token, policy.fleet_token, request.model, request.channel
    )
    _check_key_fields(request, policy)
    take_challenge(session, request.device_id, request.nonce)
    statement = _statement(request)
    if not signature_verifies(request.public_key, statement, request.proof):
        raise NotAuthenticatedError("proof of possession does not verify with public_key")
    try:
        return _enroll(session, request, grant, statement, policy)
    except IntegrityError:  # the same new device enrolled concurrently and won
        session.rollback()
        raise ConflictError(f"device {request.device_id!r} is enrolling already; retry") from None


def _check_key_fields(request: EnrollRequest, policy: EnrollmentPolicy) -> None:
    missing = [f for f in ("nonce", "public_key", "proof") if not getattr(request, f)]
    if missing:
        raise InvalidInputError(
            f"enrollment needs {', '.join(missing)}: the device's public key and its "
            "signature over a fresh challenge (GET .../challenge)"
        )
    if request.device_id in policy.reserved_ids:
        raise InvalidInputError(f"device id {request.device_id!r} is reserved")
    check_public_key(request.public_key)


def _statement(request: EnrollRequest) -> bytes:
    return enroll_statement(
        nonce=request.nonce,
        device_id=request.device_id,
        model=request.model,
        channel=request.channel,
        public_key=request.public_key,
    )


def _enroll(
    session: Session,
    request: EnrollRequest,
    grant: EnrollmentGrant,
    statement: bytes,
    policy: EnrollmentPolicy,
) -> Enrolled:
    device = session.get(Device, request.device_id)
    reenrolled = device is not None
    if device is None:
        device = Device(device_id=request.device_id, enrolled_at=utcnow())
        session.add(device)
    else:
        _require_old_key(device, request, statement)
    device.model, device.channel = request.model, request.channel
    device.public_key, device.enrollment_open = request.public_key, False
    secret = _new_broker_secret(device)
    session.flush()  # the device row exists before its first token refers to it
    spend(session, grant)
    revoke_device_tokens(session, device.device_id)
    access = issue_device_token(session, device.device_id, policy.token_ttl_s)
    action = "re-enrolled" if reenrolled else "enrolled"
    detail = {"model": request.model, "channel": request.channel, "key": request.public_key}
    record(session, device.device_id, f"enrollment-token:{grant.name}", action, detail=detail)
    session.commit()
    return Enrolled(
        **access.model_dump(),
        broker_user=device.device_id,
        broker_secret=secret,
        reenrolled=reenrolled,
    )


def _require_old_key(device: Device, request: EnrollRequest, statement: bytes) -> None:
    """Enrolling over an existing id: the id's own key signed it, or an admin reset it."""
    if device.enrollment_open or device.public_key == request.public_key:
        return
    if device.public_key and signature_verifies(
        device.public_key, statement, request.previous_proof
    ):
        return
    log.warning("refused to enroll over device %s without its key", device.device_id)
    raise ConflictError(
        f"device {device.device_id!r} is enrolled with another key: enroll with a request "
        "signed by its key (previous_proof), or have an admin reset it (ota device reset)"
    )


def _new_broker_secret(device: Device) -> str:
    secret = secrets.token_urlsafe(BROKER_SECRET_BYTES)
    device.broker_password_hash = hash_password(secret)
    return secret


def reissue_broker_secret(session: Session, device_id: str) -> BrokerSecret:
    """A new broker secret for an authenticated device (its old one stops working). Commits."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFoundError(f"no device {device_id!r}")
    secret = _new_broker_secret(device)
    record(session, device_id, f"device:{device_id}", "broker-secret")
    session.commit()
    return BrokerSecret(device_id=device_id, broker_user=device_id, broker_secret=secret)


# ---------------------------------------------------------------------- reset and audit


def reset_device(session: Session, device_id: str, reason: str, actor: str) -> DeviceAuditEntry:
    """Forget `device_id`'s key, tokens and broker login, so that it may enroll afresh with an
    enrollment token; the reason and the admin are audited. Commits."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFoundError(f"no device {device_id!r}")
    detail = {"previous_key": device.public_key}
    device.public_key, device.enrollment_open, device.broker_password_hash = None, True, None
    revoke_device_tokens(session, device_id)
    row = record(session, device_id, actor, "reset", reason=reason, detail=detail)
    session.commit()
    return audit_view(row)


def record(
    session: Session,
    device_id: str,
    actor: str,
    action: str,
    *,
    reason: str = "",
    detail: dict[str, Any] | None = None,
) -> DeviceAudit:
    """One row of the device audit (the caller commits)."""
    row = DeviceAudit(
        device_id=device_id,
        at=utcnow(),
        actor=actor,
        action=action,
        reason=reason,
        detail=detail or {},
    )
    session.add(row)
    return row


def audit_view(row: DeviceAudit) -> DeviceAuditEntry:
    return DeviceAuditEntry(
        device_id=row.device_id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        reason=row.reason,
        detail=row.detail,
    )


def device_audit(session: Session, device_id: str) -> list[DeviceAuditEntry]:
    rows = session.scalars(
        select(DeviceAudit).where(DeviceAudit.device_id == device_id).order_by(DeviceAudit.id)
    )
    return [audit_view(row) for row in rows]
