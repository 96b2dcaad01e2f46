"""Who is signed in to the dashboard, and whether a form may act: the session cookie checked
against the token it was made from, the roles of `server.auth`, and a CSRF token per session.

A page asks for `signed_in(*roles)`: no session -> the sign-in page (303), another role -> 403.
A form post also asks `checked_form`: same origin, and the session's CSRF token in the body."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from server.auth import Principal, Role, principal_for_digest
from server.errors import NotAuthenticatedError
from server.request_scope import SessionDep, StateDep
from server.settings import Settings
from server.web.cookie import COOKIE_NAME, SESSION_S, WebSession, seal, unseal

MAX_FORM_BYTES = 256 * 1024  # feedback with a 64 KiB log excerpt fits, urlencoded
SIGNIN_PATH = "/signin"


class SignInRequiredError(Exception):
    """No valid session: the handler sends the browser to the sign-in page."""

    def __init__(self, back_to: str) -> None:
        super().__init__("sign in first")
        self.back_to = back_to


class WebRefusalError(Exception):
    """A signed-in user may not do this (403), or a form failed its checks (400/403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WebUser:
    principal: Principal
    session: WebSession

    @property
    def role(self) -> Role:
        return self.principal.role

    def may(self, *roles: Role) -> bool:
        return self.role is Role.ADMIN or self.role in roles

    @property
    def releases(self) -> bool:
        """A release engineer (or admin): the buttons that change rollouts and groups."""
        return self.may(Role.RELEASE_ENGINEER)


def session_key(request: Request) -> bytes:
    key: bytes = request.app.state.web_session_key
    return key


def current_user(request: Request, session: Session, settings: Settings) -> WebUser | None:
    """The cookie's session, if it is sound and its token still names the same principal."""
    value = request.cookies.get(COOKIE_NAME, "")
    web = unseal(value, session_key(request), time.time()) if value else None
    if web is None:
        return None
    try:
        principal = principal_for_digest(session, settings, web.token_digest)
    except NotAuthenticatedError:  # the token expired since: sign in again
        return None
    if principal is None or (principal.role, principal.subject) != (web.role, web.subject):
        return None  # revoked or rotated since: sign in again
    return WebUser(principal, web)


def signed_in(*roles: Role) -> Callable[..., WebUser]:
    """A page dependency: the signed-in user if their role is one of `roles` (or admin)."""

    def dependency(request: Request, session: SessionDep, state: StateDep) -> WebUser:
        user = current_user(request, session, state.settings)
        if user is None:
            raise SignInRequiredError(request.url.path)
        if not user.may(*roles):
            raise WebRefusalError(403, f"this page is not for the role {user.role.value}")
        return user

    return dependency


def session_cookie(request: Request, web: WebSession) -> str:
    """The Set-Cookie value for `web`: HttpOnly, SameSite=Strict, Secure over https."""
    secure = "; Secure" if request.url.scheme == "https" else ""
    cookie = f"{COOKIE_NAME}={seal(web, session_key(request))}"
    return f"{cookie}; Path=/; Max-Age={SESSION_S}; HttpOnly; SameSite=Strict{secure}"


def clear_session_cookie() -> str:
    return f"{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"


def signin_url(back_to: str) -> str:
    return f"{SIGNIN_PATH}?next={quote(back_to, safe='/')}"


def safe_next(target: str) -> str:
    """Only a path on this site (no scheme, no host, no //): an open redirect otherwise."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return parts.path or "/"


async def form_fields(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the last value of each), from a same-origin request."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _own_origin(request):
        raise WebRefusalError(403, "this form was sent from another site")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise WebRefusalError(413, "this form is too large")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def require_csrf(user: WebUser, fields: dict[str, str]) -> None:
    """A form acts only with the session's CSRF token in its body."""
    if not user.session.csrf_matches(fields.get("csrf", "")):
        raise WebRefusalError(403, "this form has expired or did not come from this dashboard")


Reader = Annotated[WebUser, Depends(signed_in(Role.VIEWER, Role.RELEASE_ENGINEER))]
ReleaseEngineer = Annotated[WebUser, Depends(signed_in(Role.RELEASE_ENGINEER))]
AnyWebUser = Annotated[WebUser, Depends(signed_in(Role.VIEWER, Role.RELEASE_ENGINEER, Role.TESTER))]
Tester = Annotated[WebUser, Depends(signed_in(Role.TESTER))]
FormFields = Annotated[dict[str, str], Depends(form_fields)]
