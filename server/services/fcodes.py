"""F-codes: single-use invite codes to the preview channel, kept only as sha256 hashes.

Redeeming one moves the device to the code's channel and hands out a tester token, all in one
transaction: a used, expired or unknown code is refused with a reason and changes nothing.
Leaving preview moves the device to stable; the agent never installs a version older than
the one it runs, so the device stays on its build until stable passes it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from server.api_models import ChannelChange, IssuedCodes, Redemption
from server.errors import ConflictError, GoneError, NotFoundError
from server.models import Device, FCode, utcnow
from server.services.devices import hash_credential

PREVIEW: Final = "preview"
STABLE: Final = "stable"
CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud, typed
CODE_GROUPS: Final = 4  # of 4 characters each: 80 bits

TokenMaker = Callable[[Session, str], str]  # (session, device_id) -> a tester token
TesterEnd = Callable[[Session, str], object]  # (session, device_id): revoke that token


def new_code() -> str:
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(4 * CODE_GROUPS))
    return "F-" + "-".join(chars[i : i + 4] for i in range(0, len(chars), 4))


def hash_code(code: str) -> str:
    """The stored form: sha256 of the code without case, spaces or dashes."""
    return hash_credential("".join(code.split()).replace("-", "").upper())


def issue_fcodes(
    session: Session,
    *,
    count: int,
    expires_in_s: float,
    channel: str = PREVIEW,
    now: datetime | None = None,
) -> IssuedCodes:
    now = now or utcnow()
    expires_at = now + timedelta(seconds=expires_in_s)
    codes = [new_code() for _ in range(count)]
    session.add_all(
        FCode(code_hash=hash_code(c), channel=channel, created_at=now, expires_at=expires_at)
        for c in codes
    )
    session.commit()
    return IssuedCodes(codes=codes, channel=channel, expires_at=expires_at)


def redeem_fcode(
    session: Session,
    device: Device,
    code: str,
    *,
    tester_token: TokenMaker,
    now: datetime | None = None,
) -> Redemption:
    """Spend `code` on `device`: it joins the code's channel and gets a tester token. The
    device that spent a code may redeem it again until the code expires (its answer was
    lost, or it left and comes back): the same channel and a rotated token."""
    now = now or utcnow()
    row = session.scalar(select(FCode).where(FCode.code_hash == hash_code(code)))
    if row is None:
        raise NotFoundError("unknown F-code (check it for typos)")
    if row.redeemed_at is not None and row.redeemed_by != device.device_id:
        raise ConflictError("this F-code has been used already; ask for a new one")
    if row.expires_at <= now:
        raise GoneError(f"this F-code expired at {row.expires_at.isoformat()}")
    if row.redeemed_by == device.device_id:  # a retry after a lost answer: same outcome
        return _join(session, device, row.channel, tester_token)
    spent = cast(
        CursorResult[Any],
        session.execute(
            update(FCode)
            .where(FCode.id == row.id, FCode.redeemed_at.is_(None))
            .values(redeemed_at=now, redeemed_by=device.device_id)
        ),
    )
    if spent.rowcount != 1:  # another device spent it a moment ago
        session.rollback()
        raise ConflictError("this F-code has been used already; ask for a new one")
    return _join(session, device, row.channel, tester_token)


def _join(session: Session, device: Device, channel: str, tester_token: TokenMaker) -> Redemption:
    previous = device.channel
    device.channel = channel
    token = tester_token(session, device.device_id)
    session.commit()
    return Redemption(
        device_id=device.device_id, channel=channel, previous_channel=previous, tester_token=token
    )


def leave_preview(
    session: Session, device: Device, *, end_tester: TesterEnd | None = None
) -> ChannelChange:
    """Back to stable, keeping the build that runs (the agent never goes down); `end_tester`
    takes the device's tester rights away in the same transaction."""
    previous = device.channel
    if previous not in (PREVIEW, STABLE):
        raise ConflictError(f"device {device.device_id!r} is on {previous!r}, not on preview")
    device.channel = STABLE
    if end_tester is not None:
        end_tester(session, device.device_id)
    session.commit()
    return ChannelChange(device_id=device.device_id, channel=STABLE, previous_channel=previous)
