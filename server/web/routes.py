"""The dashboard's front door: sign in and out, its static files, and `install_dashboard`,
which adds every dashboard route to an app."""

from __future__ import annotations

import secrets
import time
from importlib import resources
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from server.auth import Principal, Role, resolve_principal
from server.errors import NotAuthenticatedError, TooManyRequestsError
from server.rate_limits import ClientAddress
from server.request_scope import SessionDep, StateDep
from server.services.devices import hash_credential
from server.settings import Settings
from server.web import actions, pages
from server.web.access import (
    SIGNIN_PATH,
    FormFields,
    SignInRequiredError,
    WebRefusalError,
    clear_session_cookie,
    current_user,
    require_csrf,
    safe_next,
    session_cookie,
    signin_url,
)
from server.web.cookie import WebSession
from server.web.render import make_templates, render

router = APIRouter(tags=["dashboard"], include_in_schema=False)
STATIC_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
SESSION_KEY_BYTES = 32


def install_dashboard(app: FastAPI, settings: Settings) -> None:
    """The dashboard's routes, templates and session key on `app`."""
    key = settings.web_session_key.encode() or secrets.token_bytes(SESSION_KEY_BYTES)
    app.state.web_session_key = key
    app.state.web_templates = make_templates()
    app.add_exception_handler(SignInRequiredError, _to_signin)
    app.add_exception_handler(WebRefusalError, _refused)
    for module_router in (router, pages.router, actions.router):
        app.include_router(module_router)


async def _to_signin(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequiredError)  # noqa: S101  # registered for this class only
    return RedirectResponse(signin_url(exc.back_to), status_code=303)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebRefusalError)  # noqa: S101  # registered for this class only
    context = {"heading": "Not allowed", "message": str(exc), "back": "/"}
    return render(request, "error.html", context, status=exc.status)


def home_of(role: Role) -> str:
    return "/testers" if role is Role.TESTER else "/fleet"


@router.get("/")
def root(request: Request, session: SessionDep, state: StateDep) -> Response:
    user = current_user(request, session, state.settings)
    return RedirectResponse(home_of(user.role) if user else SIGNIN_PATH, status_code=303)


@router.get(SIGNIN_PATH)
def signin_page(request: Request, next: str = "/") -> Response:  # the query's name
    return render(request, "signin.html", {"next": safe_next(next), "error": ""})


def _who(session: SessionDep, state: StateDep, token: str) -> tuple[Principal | None, str]:
    """The token's principal, or None and why not."""
    try:
        principal = resolve_principal(session, state.settings, token)
    except NotAuthenticatedError as exc:  # an expired token: its date is the reason
        return None, str(exc)
    return principal, "" if principal else "That token is unknown, revoked or mistyped."


@router.post(SIGNIN_PATH)
def signin(
    request: Request,
    fields: FormFields,
    session: SessionDep,
    state: StateDep,
    address: ClientAddress,
) -> Response:
    """A failed sign-in counts against the address as any failed authentication does (429)."""
    failures = state.rate_limits.auth_failure
    if (wait := state.rate_limits.retry_after(failures, address)) is not None:
        raise TooManyRequestsError(failures.action, wait)
    token, back_to = fields.get("token", "").strip(), safe_next(fields.get("next", "/"))
    principal, error = _who(session, state, token)
    if principal is not None and principal.role is Role.DEVICE:
        error = "A device credential cannot sign in; use the tester token you got on joining."
    if principal is None or error:
        if principal is None:
            state.rate_limits.hit(failures, address)
        context = {"next": back_to, "error": error}
        return render(request, "signin.html", context, status=401 if principal is None else 403)
    web = WebSession.start(principal.role, principal.subject, hash_credential(token), time.time())
    target = back_to if back_to != "/" else home_of(principal.role)
    response = RedirectResponse(target, status_code=303)
    response.headers["set-cookie"] = session_cookie(request, web)
    return response


@router.post("/signout")
def signout(request: Request, fields: FormFields, session: SessionDep, state: StateDep) -> Response:
    user = current_user(request, session, state.settings)
    if user is not None:
        require_csrf(user, fields)
    response = RedirectResponse(SIGNIN_PATH, status_code=303)
    response.headers["set-cookie"] = clear_session_cookie()
    return response


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """The dashboard's own CSS and script (and their licences); nothing from elsewhere."""
    files = resources.files("server.web") / "static"
    suffix = name[name.rfind(".") :] if "." in name else ""
    known = {entry.name for entry in files.iterdir() if entry.is_file()}
    if name not in known or suffix not in STATIC_TYPES:
        return Response("no such file", status_code=404, media_type="text/plain")
    headers = {"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"}
    body = (files / name).read_bytes()
    return Response(body, media_type=STATIC_TYPES[suffix], headers=headers)
