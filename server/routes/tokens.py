"""Token administration (admin only): issue, list (never the secrets), revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends

from server.api_models import IssuedToken, RevokedToken, TokenInfo
from server.auth import (
    Principal,
    Role,
    issue_token,
    list_tokens,
    require_role,
    revoke_token,
    token_info,
)
from server.deps import SessionDep
from server.errors import NotFoundError
from server.input_bounds import NameInPath
from server.schemas import TokenIn
from wire.paths import TOKENS_PATH, token_path

router = APIRouter(tags=["tokens"])

Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]


@router.post(TOKENS_PATH, status_code=201, response_model=IssuedToken)
def post_token(body: TokenIn, session: SessionDep, _: Admin) -> IssuedToken:
    lifetime = timedelta(seconds=body.expires_in_s)
    subject = body.subject or body.name
    token = issue_token(session, role=body.role, subject=subject, name=body.name, lifetime=lifetime)
    session.commit()
    expires_at = token_info(session, body.name).expires_at
    return IssuedToken(name=body.name, role=body.role, token=token, expires_at=expires_at)


@router.get(TOKENS_PATH, response_model=list[TokenInfo])
def get_tokens(session: SessionDep, _: Admin) -> list[TokenInfo]:
    return list_tokens(session)


@router.delete(token_path("{name}"), response_model=RevokedToken)
def delete_token(name: NameInPath, session: SessionDep, _: Admin) -> RevokedToken:
    if not revoke_token(session, name):
        raise NotFoundError(f"no active token named {name!r}")
    return RevokedToken(name=name, revoked=True)
