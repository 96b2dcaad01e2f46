"""Enrollment, per-device credentials, the device registry."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.api_models import Device as DeviceView
from server.errors import ConflictError, ForbiddenError, NotAuthenticatedError
from server.models import Device, utcnow
from server.mosquitto import hash_password
from server.schemas import EnrollRequest
from server.services.views import each_view


@dataclass(frozen=True)
class Enrollment:
    device_id: str
    credential: str  # shown once; the server keeps only its sha256

    def to_dict(self) -> dict[str, str]:
        return {"device_id": self.device_id, "credential": self.credential}


def hash_credential(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def tokens_match(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def enroll_device(session: Session, request: EnrollRequest, enrollment_token: str) -> Enrollment:
    """Trade the fleet's enrollment token for a device credential; re-enrolling rotates it."""
    if not enrollment_token:
        raise ForbiddenError(
            "enrollment is switched off on this server (OTA_ENROLLMENT_TOKEN unset)"
        )
    if not tokens_match(request.enrollment_token, enrollment_token):
        raise ForbiddenError("invalid enrollment token")
    credential = secrets.token_urlsafe(32)
    device = session.get(Device, request.device_id)
    if device is None:
        device = Device(device_id=request.device_id, enrolled_at=utcnow())
        session.add(device)
    device.model = request.model
    device.channel = request.channel
    device.credential_hash = hash_credential(credential)
    device.broker_password_hash = hash_password(credential)  # the broker login is the same
    try:
        session.commit()
    except IntegrityError:  # the same new device enrolled concurrently and won
        session.rollback()
        raise ConflictError(f"device {request.device_id!r} is enrolling already; retry") from None
    return Enrollment(request.device_id, credential)


def authenticate_device(session: Session, device_id: str, credential: str) -> Device:
    """The device a bearer credential belongs to, if that is `device_id`; raises otherwise."""
    if not credential:
        raise NotAuthenticatedError(
            "missing device credential (Authorization: Bearer <credential>)"
        )
    owner = session.scalar(
        select(Device).where(Device.credential_hash == hash_credential(credential))
    )
    if owner is None:
        raise NotAuthenticatedError("invalid device credential")
    if owner.device_id != device_id:
        raise ForbiddenError(f"this credential is not the credential of device {device_id!r}")
    return owner


def is_silent(device: Device, now: datetime, report_timeout_s: float) -> bool:
    """Not heard from (poll or report) within the report timeout, or never."""
    heard = max((t for t in (device.last_seen, device.last_report_at) if t), default=None)
    return heard is None or (now - heard).total_seconds() > report_timeout_s


def device_view(device: Device, now: datetime, report_timeout_s: float) -> DeviceView:
    return DeviceView(
        device_id=device.device_id,
        model=device.model,
        channel=device.channel,
        state=device.state,
        current_version=device.current_version,
        target_version=device.target_version,
        slot=device.slot,
        reason=device.reason,
        last_seq=device.last_seq,
        enrolled_at=device.enrolled_at,
        last_seen=device.last_seen,
        last_report_at=device.last_report_at,
        silent=is_silent(device, now, report_timeout_s),
    )


def list_devices(session: Session, report_timeout_s: float) -> list[DeviceView]:
    now = utcnow()
    devices = session.scalars(select(Device).order_by(Device.device_id))
    return each_view(devices, lambda d: device_view(d, now, report_timeout_s), "device")
