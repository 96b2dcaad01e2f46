"""What every request can depend on: the app state, one database session, the bearer token.

Kept apart from `server.deps` so that `server.auth` can share the request's session without
importing the dependencies that use it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from server.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ota
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value, or ""."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


MAX_AUTHORIZATION_CHARS = 1024  # "Bearer " and a token; longer is refused (422)


def header_token(
    authorization: Annotated[str | None, Header(max_length=MAX_AUTHORIZATION_CHARS)] = None,
) -> str:
    return bearer_token(authorization)


TokenDep = Annotated[str, Depends(header_token)]
