"""FastAPI dependencies: the app state, a session per request, admin and device auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from server.errors import ForbiddenError, NotAuthenticatedError
from server.models import Device
from server.services.devices import authenticate_device, tokens_match
from server.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ota
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_token(authorization: Annotated[str | None, Header()] = None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or ""."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


TokenDep = Annotated[str, Depends(bearer_token)]


def check_admin(state: AppState, token: str) -> None:
    if not state.settings.admin_token:
        raise ForbiddenError("the admin API is switched off on this server (OTA_ADMIN_TOKEN unset)")
    if not token:
        raise NotAuthenticatedError("missing admin token (Authorization: Bearer <admin token>)")
    if not tokens_match(token, state.settings.admin_token):
        raise ForbiddenError("invalid admin token")


def require_admin(state: StateDep, token: TokenDep) -> None:
    check_admin(state, token)


def current_device(device_id: str, session: SessionDep, token: TokenDep) -> Device:
    """The device of the path, authenticated by its own credential."""
    return authenticate_device(session, device_id, token)


DeviceDep = Annotated[Device, Depends(current_device)]
