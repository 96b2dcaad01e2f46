"""Who may do what: roles, bearer tokens, and the FastAPI dependency that checks them.

A bearer token resolves to one `Principal` (role + subject) from one of three sources, tried
in order: the settings' admin token (ADMIN, subject "admin"), an API token issued by
`issue_token` (its role and subject; only the sha256 is stored, in `api_tokens`; it expires,
and its last use is noted; never the DEVICE role), or a device's short-lived access token,
obtained by signing a challenge with its own key (DEVICE, subject = device id;
`server.services.device_keys`). `require_role(*roles)` turns that into a route dependency:
no or unknown token -> 401, a known token of another role -> 403 naming the roles allowed.
ADMIN passes every role check. Endpoints about one device add `require_device_self`, so a
device (or a tester bound to a device) acts only as itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.api_models import Role as Role  # its home is the API's models
from server.api_models import TokenInfo
from server.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotAuthenticatedError,
)
from server.input_bounds import NameInPath
from server.models import ApiToken, Device, DeviceToken, utcnow
from server.request_scope import SessionDep, StateDep, TokenDep
from server.schemas import DEFAULT_TOKEN_LIFETIME_S, MAX_NAME_CHARS, MAX_TOKEN_LIFETIME_S
from server.services.device_keys import device_of_token
from server.services.devices import hash_credential, tokens_match
from server.services.views import each_view
from server.settings import Settings

TOKEN_BYTES = 32
DEFAULT_TOKEN_LIFETIME = timedelta(seconds=DEFAULT_TOKEN_LIFETIME_S)
MAX_TOKEN_LIFETIME = timedelta(seconds=MAX_TOKEN_LIFETIME_S)
LAST_USED_GRANULARITY = timedelta(minutes=1)  # a token's last use is written at most this often


@dataclass(frozen=True)
class Principal:
    role: Role
    subject: str  # the token's name; the device id for DEVICE and a device-bound TESTER


ADMIN_PRINCIPAL = Principal(Role.ADMIN, "admin")
DEVICE_BOUND = frozenset({Role.DEVICE, Role.TESTER})


# ---------------------------------------------------------------------- tokens


def issue_token(
    session: Session,
    *,
    role: Role,
    subject: str,
    name: str = "",
    lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
    now: datetime | None = None,
) -> str:
    """A new API token valid for `lifetime` (at most `MAX_TOKEN_LIFETIME`); returns the
    plaintext (shown once) and stores only its sha256.

    The caller commits. Issuing again under the name of an active token of the same role and
    subject rotates that token (the old one stops working). A name is never reused otherwise:
    another holder's or a revoked token's name is a conflict, so a revoked row stays as it was
    revoked. Without a name, a unique one is made up. No token acts as a device."""
    if role is Role.DEVICE:
        raise ForbiddenError("no token acts as a device: a device proves itself with its own key")
    if not timedelta(0) < lifetime <= MAX_TOKEN_LIFETIME:
        raise InvalidInputError(f"a token lives more than 0 s and at most {MAX_TOKEN_LIFETIME}")
    name = name or _made_up_name(role, subject)
    row = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if row is None:
        row = ApiToken(name=name, role=role.value, subject=subject)
        session.add(row)
    _check_reissue(row, role, subject)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    row.created_at = now or utcnow()
    row.token_hash, row.expires_at = hash_credential(token), row.created_at + lifetime
    session.flush()
    return token


def _made_up_name(role: Role, subject: str) -> str:
    suffix = "-" + secrets.token_hex(4)
    return f"{role.value}-{subject}"[: MAX_NAME_CHARS - len(suffix)] + suffix


def _check_reissue(row: ApiToken, role: Role, subject: str) -> None:
    """Only an active token's own holder may have its name again (a rotation)."""
    if row.revoked_at is not None:
        raise ConflictError(
            f"the token named {row.name!r} was revoked at {row.revoked_at.isoformat()}; "
            "a token's name is never reused"
        )
    if (row.role, row.subject) != (role.value, subject):
        raise ConflictError(
            f"a token named {row.name!r} exists already (for {row.role} {row.subject})"
        )


def revoke_token(session: Session, name_or_hash: str) -> bool:
    """Revoke the active token with this name (or sha256); False if there is none. Commits."""
    row = session.scalar(
        select(ApiToken).where(
            (ApiToken.name == name_or_hash) | (ApiToken.token_hash == name_or_hash),
            ApiToken.revoked_at.is_(None),
        )
    )
    if row is None:
        return False
    row.revoked_at = utcnow()
    session.commit()
    return True


def revoke_tokens_of(session: Session, role: Role, subject: str) -> None:
    """Revoke every active token of `role` held by `subject` (the caller commits)."""
    session.execute(
        update(ApiToken)
        .where(
            ApiToken.role == role.value,
            ApiToken.subject == subject,
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )


def token_view(row: ApiToken) -> TokenInfo:
    """A token as the admin sees it: never the secret or its hash."""
    return TokenInfo(
        name=row.name,
        role=Role(row.role),
        subject=row.subject,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
    )


def token_info(session: Session, name: str) -> TokenInfo:
    return token_view(session.scalars(select(ApiToken).where(ApiToken.name == name)).one())


def list_tokens(session: Session) -> list[TokenInfo]:
    rows = session.scalars(select(ApiToken).order_by(ApiToken.name))
    return each_view(rows, token_view, "token")


# ---------------------------------------------------------------------- checking


def resolve_principal(
    session: Session, settings: Settings, token: str, now: datetime | None = None
) -> Principal | None:
    """Who a bearer token belongs to, or None if it matches nothing; an expired API token
    is refused with its date (401). An API token's use is noted, at most once a minute."""
    if not token:
        return None
    if settings.admin_token and tokens_match(token, settings.admin_token):
        return ADMIN_PRINCIPAL
    return principal_for_digest(session, settings, hash_credential(token), now)


def principal_for_digest(
    session: Session, settings: Settings, digest: str, now: datetime | None = None
) -> Principal | None:
    """Who the token with this sha256 belongs to (the dashboard's cookie keeps only that)."""
    if settings.admin_token and tokens_match(digest, hash_credential(settings.admin_token)):
        return ADMIN_PRINCIPAL
    row = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
    )
    if row is not None and row.role != Role.DEVICE.value:  # no API token acts as a device
        return _api_token_principal(session, row, now or utcnow())
    device_id = device_of_token(session, digest)  # obtained by signing with the device's key
    return Principal(Role.DEVICE, device_id) if device_id is not None else None


def _api_token_principal(session: Session, row: ApiToken, now: datetime) -> Principal:
    if row.expires_at <= now:
        raise NotAuthenticatedError(
            f"this token expired at {row.expires_at.isoformat()}; ask an admin for a new one"
        )
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        session.commit()
    return Principal(Role(row.role), row.subject)


def authorize(principal: Principal | None, roles: frozenset[Role]) -> Principal:
    """The principal if its role is allowed (ADMIN always is); raises 401/403 otherwise."""
    if principal is None:
        raise NotAuthenticatedError("missing or unknown token (Authorization: Bearer <token>)")
    if principal.role is Role.ADMIN or principal.role in roles:
        return principal
    allowed = ", ".join(sorted({Role.ADMIN.value} | {r.value for r in roles}))
    raise ForbiddenError(f"this needs one of the roles {allowed}; yours is {principal.role.value}")


def require_device_self(device_id: str, principal: Principal) -> Principal:
    """A device-bound principal may act only for its own device; others pass unchanged."""
    if principal.role in DEVICE_BOUND and principal.subject != device_id:
        raise ForbiddenError(f"this credential is not the credential of device {device_id!r}")
    return principal


def require_role(*roles: Role) -> Callable[..., Principal]:
    """A route dependency returning the caller's `Principal` if it has one of `roles`
    (ADMIN always passes; no roles = ADMIN only)."""
    allowed = frozenset(roles)

    def dependency(session: SessionDep, state: StateDep, token: TokenDep) -> Principal:
        return authorize(resolve_principal(session, state.settings, token), allowed)

    dependency.__name__ = "require_" + "_or_".join(sorted(r.value for r in allowed) or ["admin"])
    return dependency


def device_self(
    device_id: NameInPath, session: SessionDep, state: StateDep, token: TokenDep
) -> Principal:
    """The device of the path, authenticated by its own credential: only DEVICE principals
    (an admin or tester token cannot poll or report in a device's place)."""
    return _device_principal(session, state.settings, device_id, token)


def _device_principal(
    session: Session, settings: Settings, device_id: str, token: str
) -> Principal:
    principal = resolve_principal(session, settings, token)
    if principal is None:
        raise NotAuthenticatedError(
            "missing or unknown device credential (Authorization: Bearer <credential>)"
        )
    if principal.role is not Role.DEVICE:
        raise ForbiddenError(f"only device {device_id!r} itself may do this")
    return require_device_self(device_id, principal)


def device_of_credential(
    session: Session, settings: Settings, device_id: str, token: str
) -> Device:
    """The device of the path, authenticated by its own unexpired access token, in ONE query
    (the token joined to its device's row): the path every device request takes. Anything
    else (no token, an unknown, expired or another device's token, an admin or API token)
    falls through to `device_self`'s checks for the precise 401 or 403."""
    if token and not (settings.admin_token and tokens_match(token, settings.admin_token)):
        device = session.scalar(
            select(Device)
            .join(DeviceToken, DeviceToken.device_id == Device.device_id)
            .where(
                DeviceToken.token_hash == hash_credential(token),
                DeviceToken.device_id == device_id,
                DeviceToken.expires_at > utcnow(),
            )
        )
        if device is not None:
            return device
    principal = _device_principal(session, settings, device_id, token)
    return session.get_one(Device, principal.subject)  # the token became valid in between


DeviceSelf = Annotated[Principal, Depends(device_self)]
