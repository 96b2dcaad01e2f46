"""Enrollment tokens: the fleet-wide one from the settings, and tokens an admin makes that are
limited in uses, lifetime, model and channel, and can be revoked. Only their sha256 is kept.

`check_enrollment_token` says whether a token lets this model onto this channel (403 with the
reason if not) without spending it; `spend` counts the use in the enrollment's transaction,
atomically, so two devices racing for a token's last use cannot both have it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.api_models import EnrollmentTokenInfo, IssuedEnrollmentToken
from server.errors import ConflictError, ForbiddenError
from server.models import EnrollmentToken, utcnow
from server.schemas import EnrollmentTokenIn
from server.services.devices import hash_credential, tokens_match

TOKEN_BYTES: Final = 24
FLEET_TOKEN_NAME: Final = "fleet"  # noqa: S105  # the settings' token's name in the audit


@dataclass(frozen=True)
class EnrollmentGrant:
    """A token that may enroll this request: the fleet's (row_id None) or a limited one."""

    name: str
    row_id: int | None = None


def check_enrollment_token(
    session: Session, given: str, fleet_token: str, model: str, channel: str
) -> EnrollmentGrant:
    """The grant `given` carries for `model` on `channel`; 403 saying why if none."""
    if fleet_token and given and tokens_match(given, fleet_token):
        return EnrollmentGrant(FLEET_TOKEN_NAME)
    if not given and not fleet_token:
        raise ForbiddenError(
            "enrollment is switched off on this server (OTA_ENROLLMENT_TOKEN unset) "
            "unless an admin-made enrollment token is given"
        )
    row = session.scalar(
        select(EnrollmentToken).where(EnrollmentToken.token_hash == hash_credential(given))
    )
    if row is None or row.revoked_at is not None:
        raise ForbiddenError("invalid enrollment token")
    _check_limits(row, model, channel)
    return EnrollmentGrant(row.name, row.id)


def _check_limits(row: EnrollmentToken, model: str, channel: str) -> None:
    if row.expires_at <= utcnow():
        raise ForbiddenError(f"enrollment token {row.name!r} expired")
    if row.max_uses is not None and row.uses >= row.max_uses:
        raise ForbiddenError(f"enrollment token {row.name!r} is used up ({row.max_uses} uses)")
    if row.model is not None and row.model != model:
        raise ForbiddenError(f"enrollment token {row.name!r} is for model {row.model!r} only")
    if row.channel is not None and row.channel != channel:
        raise ForbiddenError(f"enrollment token {row.name!r} is for channel {row.channel!r} only")


def spend(session: Session, grant: EnrollmentGrant) -> None:
    """Count one use of a limited token (the caller commits); 403 if it ran out meanwhile."""
    if grant.row_id is None:
        return
    counted = session.execute(
        update(EnrollmentToken)
        .where(
            EnrollmentToken.id == grant.row_id,
            EnrollmentToken.revoked_at.is_(None),
            (EnrollmentToken.max_uses.is_(None))
            | (EnrollmentToken.uses < EnrollmentToken.max_uses),
        )
        .values(uses=EnrollmentToken.uses + 1)
    )
    if getattr(counted, "rowcount", 0) != 1:
        raise ForbiddenError(f"enrollment token {grant.name!r} is used up or revoked")


# ---------------------------------------------------------------------- the admin's side


def create_enrollment_token(
    session: Session, body: EnrollmentTokenIn, actor: str
) -> IssuedEnrollmentToken:
    """A new limited enrollment token; the plaintext is in the answer only. Commits."""
    if session.scalar(select(EnrollmentToken.id).where(EnrollmentToken.name == body.name)):
        raise ConflictError(f"an enrollment token named {body.name!r} exists already")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    row = EnrollmentToken(
        name=body.name,
        token_hash=hash_credential(token),
        model=body.model,
        channel=body.channel,
        max_uses=body.max_uses,
        uses=0,
        created_by=actor,
        created_at=now,
        expires_at=now + timedelta(seconds=body.expires_in_s),
    )
    session.add(row)
    session.commit()
    return IssuedEnrollmentToken(**enrollment_token_view(row).model_dump(), token=token)


def enrollment_token_view(row: EnrollmentToken) -> EnrollmentTokenInfo:
    return EnrollmentTokenInfo(
        name=row.name,
        model=row.model,
        channel=row.channel,
        max_uses=row.max_uses,
        uses=row.uses,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def list_enrollment_tokens(session: Session) -> list[EnrollmentTokenInfo]:
    rows = session.scalars(select(EnrollmentToken).order_by(EnrollmentToken.name))
    return [enrollment_token_view(row) for row in rows]


def revoke_enrollment_token(session: Session, name: str) -> EnrollmentTokenInfo | None:
    """Revoke the active enrollment token `name`; None if there is none. Commits."""
    row = session.scalar(
        select(EnrollmentToken).where(
            EnrollmentToken.name == name, EnrollmentToken.revoked_at.is_(None)
        )
    )
    if row is None:
        return None
    row.revoked_at = utcnow()
    session.commit()
    return enrollment_token_view(row)
