"""The dashboard's buttons (POST, each behind the session's CSRF token): rollout pause, resume,
advance and override for release engineers (confirmed on a page of their own, written to the
audit trail); joining the beta with an F-code, feedback and votes for testers; blocking and
closing a group for release engineers. Each calls the same service the API calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from server.auth import Principal, Role
from server.errors import (
    ConflictError,
    ForbiddenError,
    GoneError,
    NotAuthenticatedError,
    NotFoundError,
    ServiceError,
    TooLargeError,
)
from server.rate_limits import ClientAddress
from server.request_scope import SessionDep, StateDep
from server.routes.testers import new_tester_token
from server.schemas import BlockingBody, FeedbackBody, ReasonIn, Redeem
from server.services.devices import authenticate_device, hash_credential
from server.services.fcodes import redeem_fcode
from server.services.feedback import FeedbackIn, close_group, mark_blocking, submit_feedback, vote
from server.services.rollout_rules import RolloutEvent
from server.services.rollouts import RolloutChange, advance_by_hand, change_rollout, override_gate
from server.web.access import (
    FormFields,
    ReleaseEngineer,
    Tester,
    WebRefusalError,
    require_csrf,
    session_cookie,
)
from server.web.cookie import WebSession
from server.web.render import render

router = APIRouter(tags=["dashboard"], include_in_schema=False)
ROLLOUT_ACTIONS = ("pause", "resume", "advance", "override")
STATUS_OF: dict[type[ServiceError], int] = {
    NotAuthenticatedError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    GoneError: 410,
    TooLargeError: 413,
}
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def _actor(who: Principal) -> str:
    return f"{who.role.value}:{who.subject}"


def attempt(call: Callable[[], T]) -> T:
    """A service call whose refusal becomes the dashboard's error page, not JSON."""
    try:
        return call()
    except ServiceError as exc:
        status = next((s for kind, s in STATUS_OF.items() if isinstance(exc, kind)), 422)
        raise WebRefusalError(status, str(exc)) from None


def validated(schema: type[M], fields: dict[str, Any]) -> M:
    """A form's fields through the API's own request schema (the same bounds, the same 422)."""
    try:
        return schema.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise WebRefusalError(422, problems) from None


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# ---------------------------------------------------------------------- rollouts


def run_rollout_action(
    session: Session, rollout_id: str, action: str, *, actor: str, reason: str
) -> RolloutChange:
    now = datetime.now(UTC)
    if action == "advance":
        return advance_by_hand(session, rollout_id, actor=actor, reason=reason, now=now)
    if action == "override":
        return override_gate(session, rollout_id, actor=actor, reason=reason, now=now)
    event = RolloutEvent(action)
    return change_rollout(session, rollout_id, event, actor=actor, reason=reason, now=now)


@router.post("/rollouts/{rollout_id}/actions/{action}")
def rollout_action(
    rollout_id: str,
    action: str,
    fields: FormFields,
    session: SessionDep,
    state: StateDep,
    user: ReleaseEngineer,
) -> Response:
    require_csrf(user, fields)
    if action not in ROLLOUT_ACTIONS:
        raise WebRefusalError(404, f"no such action {action!r}")
    given = validated(ReasonIn, {"reason": fields.get("reason", "").strip()}).reason
    if action == "override" and not given:
        raise WebRefusalError(422, "an override needs a reason")
    reason, actor = given or f"{action} from the dashboard", _actor(user.principal)
    change = attempt(
        lambda: run_rollout_action(session, rollout_id, action, actor=actor, reason=reason)
    )
    if change.notice is not None:
        state.publisher.publish_notice(change.notice)
    return _back(f"/rollouts/{quote(rollout_id)}")


# ---------------------------------------------------------------------- testers


@router.post("/testers/join")
def join_beta(
    request: Request,
    fields: FormFields,
    session: SessionDep,
    state: StateDep,
    address: ClientAddress,
) -> Response:
    """Redeem an F-code as the device itself (its id and credential), then sign in as its
    tester: the tester token is shown once on the answer page. Counted against the same
    redemption limits as the API's redeem (429)."""
    device_id, credential = fields.get("device_id", "").strip(), fields.get("credential", "")
    state.rate_limits.hit(state.rate_limits.redeem, address, device_id)
    device = attempt(lambda: authenticate_device(session, device_id, credential.strip()))
    code = validated(Redeem, {"code": fields.get("code", "").strip()}).code
    joined = attempt(lambda: redeem_fcode(session, device, code, tester_token=new_tester_token))
    digest = hash_credential(joined.tester_token)
    web = WebSession.start(Role.TESTER, joined.device_id, digest, time.time())
    cookie = {"set-cookie": session_cookie(request, web)}
    return render(request, "joined.html", {"joined": joined}, headers=cookie)


def _board(build: str) -> RedirectResponse:
    return _back(f"/testers?build={quote(build)}" if build else "/testers")


@router.post("/testers/feedback")
def post_feedback(fields: FormFields, session: SessionDep, user: Tester) -> Response:
    require_csrf(user, fields)
    asked = {name: fields.get(name, "").strip() for name in ("build", "text", "category")}
    body = validated(FeedbackBody, {**asked, "logs": fields.get("logs") or None})
    item = FeedbackIn(
        build=body.build,
        text=body.text,
        author=_actor(user.principal),
        category=body.category,
        device_id=user.principal.subject,
        logs=body.logs,
    )
    attempt(lambda: submit_feedback(session, item))
    return _board(item.build)


@router.post("/testers/groups/{group_id}/vote")
def post_vote(group_id: int, fields: FormFields, session: SessionDep, user: Tester) -> Response:
    require_csrf(user, fields)
    attempt(lambda: vote(session, group_id, _actor(user.principal)))
    return _board(fields.get("build", ""))


@router.post("/testers/groups/{group_id}/blocking")
def post_blocking(
    group_id: int, fields: FormFields, session: SessionDep, user: ReleaseEngineer
) -> Response:
    require_csrf(user, fields)
    asked = {
        "blocking": fields.get("blocking") == "yes",
        "reason": fields.get("reason", "").strip(),
    }
    body = validated(BlockingBody, asked)
    attempt(lambda: mark_blocking(session, group_id, blocking=body.blocking, reason=body.reason))
    return _board(fields.get("build", ""))


@router.post("/testers/groups/{group_id}/close")
def post_close(
    group_id: int, fields: FormFields, session: SessionDep, user: ReleaseEngineer
) -> Response:
    require_csrf(user, fields)
    attempt(lambda: close_group(session, group_id))
    return _board(fields.get("build", ""))
