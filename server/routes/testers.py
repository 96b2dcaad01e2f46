"""Beta testers: F-codes (release engineers issue, devices redeem), feedback, votes, the
ranked list of what surfaces first, and blocking marks that hold a build's gate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from server.auth import (
    DEVICE_BOUND,
    MAX_NAME_CHARS,
    Principal,
    Role,
    issue_token,
    require_role,
    revoke_token,
)
from server.deps import DeviceDep, SessionDep
from server.errors import ForbiddenError
from server.services.devices import hash_credential
from server.services.fcodes import (
    MAX_CODES_PER_ISSUE,
    PREVIEW,
    issue_fcodes,
    leave_preview,
    redeem_fcode,
)
from server.services.feedback import (
    FeedbackIn,
    close_group,
    mark_blocking,
    submit_feedback,
    surfacing,
    vote,
)
from wire import (
    API_PREFIX,
    FEEDBACK_PATH,
    ProtocolError,
    channel_topic,
    leave_preview_path,
    redeem_path,
    vote_path,
)

router = APIRouter(tags=["testers"])

MAX_FCODE_LIFETIME_S = 90 * 24 * 3600
MAX_TEXT_CHARS = 4000

# ADMIN passes every check (server.auth)
ReleaseEngineer = Annotated[Principal, Depends(require_role(Role.RELEASE_ENGINEER))]
Tester = Annotated[Principal, Depends(require_role(Role.TESTER))]
Reporter = Annotated[Principal, Depends(require_role(Role.TESTER, Role.DEVICE))]
Reader = Annotated[
    Principal, Depends(require_role(Role.VIEWER, Role.RELEASE_ENGINEER, Role.TESTER))
]


class FCodeIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=MAX_CODES_PER_ISSUE)
    expires_in_s: float = Field(gt=0, le=MAX_FCODE_LIFETIME_S)
    channel: str = PREVIEW

    @field_validator("channel")
    @classmethod
    def _segment(cls, value: str) -> str:
        try:
            channel_topic(value, "m")
        except ProtocolError as exc:
            raise ValueError(f"channel: {exc}") from None
        return value


class Redeem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=64)


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    build: str = Field(min_length=1, max_length=128)
    category: str = Field(default="", max_length=64)
    device_id: str | None = Field(default=None, max_length=128)
    logs: str | None = None  # size-checked by the service (413 over its limit)


class BlockingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blocking: bool
    reason: str = Field(default="", max_length=2000)


@router.post(f"{API_PREFIX}/fcodes", status_code=201)
def post_fcodes(body: FCodeIssue, session: SessionDep, _: ReleaseEngineer) -> dict[str, Any]:
    issued = issue_fcodes(
        session, count=body.count, expires_in_s=body.expires_in_s, channel=body.channel
    )
    return issued.to_dict()


def tester_token_name(device_id: str) -> str:
    """One tester token per device: joining again rotates it, leaving preview revokes it."""
    name = f"tester-{device_id}"
    return name if len(name) <= MAX_NAME_CHARS else f"tester-{hash_credential(device_id)}"


def _tester_token(session: Session, device_id: str) -> str:
    name = tester_token_name(device_id)
    return issue_token(session, role=Role.TESTER, subject=device_id, name=name)


def _end_tester(session: Session, device_id: str) -> None:
    revoke_token(session, tester_token_name(device_id))


@router.post(redeem_path("{device_id}"))
def post_redeem(body: Redeem, device: DeviceDep, session: SessionDep) -> dict[str, str]:
    return redeem_fcode(session, device, body.code, tester_token=_tester_token).to_dict()


@router.post(leave_preview_path("{device_id}"))
def post_leave_preview(device: DeviceDep, session: SessionDep) -> dict[str, str]:
    return leave_preview(session, device, end_tester=_end_tester)


@router.post(FEEDBACK_PATH, status_code=201)
def post_feedback(body: FeedbackBody, who: Reporter, session: SessionDep) -> dict[str, Any]:
    device_id = body.device_id
    if who.role in DEVICE_BOUND:  # a tester's or device's token names its device: only that one
        device_id = device_id or who.subject
        if device_id != who.subject:
            raise ForbiddenError(f"you may send feedback only for device {who.subject!r}")
    item = FeedbackIn(
        build=body.build,
        text=body.text,
        author=f"{who.role.value}:{who.subject}",
        category=body.category,
        device_id=device_id,
        logs=body.logs,
    )
    return submit_feedback(session, item)


@router.post(vote_path("{group_id}"))
def post_vote(group_id: int, who: Tester, session: SessionDep) -> dict[str, Any]:
    return vote(session, group_id, f"{who.role.value}:{who.subject}")


@router.get(f"{FEEDBACK_PATH}/surfacing")
def get_surfacing(
    session: SessionDep, _: Reader, build: Annotated[str, Query(min_length=1, max_length=128)]
) -> dict[str, Any]:
    return surfacing(session, build)


@router.post(f"{FEEDBACK_PATH}/groups/{{group_id}}/blocking")
def post_blocking(
    group_id: int, body: BlockingBody, session: SessionDep, _: ReleaseEngineer
) -> dict[str, Any]:
    return mark_blocking(session, group_id, blocking=body.blocking, reason=body.reason)


@router.post(f"{FEEDBACK_PATH}/groups/{{group_id}}/close")
def post_close(group_id: int, session: SessionDep, _: ReleaseEngineer) -> dict[str, Any]:
    return close_group(session, group_id)
