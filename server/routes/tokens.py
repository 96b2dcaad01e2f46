"""Token administration (admin only): issue, list (never the secrets), revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from server.auth import (
    MAX_NAME_CHARS,
    Principal,
    Role,
    issue_token,
    list_tokens,
    require_role,
    revoke_token,
)
from server.deps import SessionDep
from server.errors import NotFoundError
from wire import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/tokens", tags=["tokens"])

Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[^/\s]+$")
    subject: str = Field(default="", max_length=128)  # the device id, for a device-bound token


@router.post("", status_code=201)
def post_token(body: TokenIn, session: SessionDep, _: Admin) -> dict[str, Any]:
    token = issue_token(session, role=body.role, subject=body.subject or body.name, name=body.name)
    session.commit()
    return {"name": body.name, "role": body.role.value, "token": token}


@router.get("")
def get_tokens(session: SessionDep, _: Admin) -> list[dict[str, Any]]:
    return list_tokens(session)


@router.delete("/{name}")
def delete_token(name: str, session: SessionDep, _: Admin) -> dict[str, Any]:
    if not revoke_token(session, name):
        raise NotFoundError(f"no active token named {name!r}")
    return {"name": name, "revoked": True}
