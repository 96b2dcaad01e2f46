"""FastAPI dependencies: the app state, a session per request, the device of the path.

Role checks live in `server.auth` (`require_role`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from server.auth import bearer_token, device_self
from server.models import Device
from server.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ota
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def header_token(authorization: Annotated[str | None, Header()] = None) -> str:
    return bearer_token(authorization)


TokenDep = Annotated[str, Depends(header_token)]


def current_device(
    request: Request, device_id: str, session: SessionDep, token: TokenDep
) -> Device:
    """The device of the path, authenticated by its own credential (401 none or unknown,
    403 another device's or a non-device token)."""
    principal = device_self(request, device_id, token)
    return session.get_one(Device, principal.subject)


DeviceDep = Annotated[Device, Depends(current_device)]
