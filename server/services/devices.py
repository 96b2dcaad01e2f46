"""The device registry, and the hashing every stored secret goes through (enrollment and a
device's key: `server.services.enrollment`, `server.services.device_keys`)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api_models import Device as DeviceView
from server.models import Device, utcnow
from server.services.staleness import TrustCheck
from server.services.views import each_view


def hash_credential(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def tokens_match(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def is_silent(device: Device, now: datetime, report_timeout_s: float) -> bool:
    """Not heard from (poll or report) within the report timeout, or never."""
    heard = max((t for t in (device.last_seen, device.last_report_at) if t), default=None)
    return heard is None or (now - heard).total_seconds() > report_timeout_s


def device_view(
    device: Device, now: datetime, report_timeout_s: float, trust: TrustCheck | None = None
) -> DeviceView:
    age = trust.device_age_s(device) if trust is not None else None
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
        trusted_timestamp_version=device.trusted_ts_version,
        trusted_timestamp_expires=device.trusted_ts_expires,
        trust_age_s=None if age is None else round(age, 1),
        stale=trust.device_is_stale(device) if trust is not None else False,
    )


def list_devices(
    session: Session, report_timeout_s: float, trust: TrustCheck | None = None
) -> list[DeviceView]:
    now = utcnow()
    devices = session.scalars(select(Device).order_by(Device.device_id))
    return each_view(devices, lambda d: device_view(d, now, report_timeout_s, trust), "device")
