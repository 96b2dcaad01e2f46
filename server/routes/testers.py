"""Beta testers: F-codes (release engineers issue, devices redeem), feedback, votes, the
ranked list of what surfaces first, and blocking marks that hold a build's gate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from server.api_models import (
    ChannelChange,
    FeedbackGroup,
    FeedbackReceipt,
    IssuedCodes,
    Redemption,
    Surfacing,
    VoteCount,
)
from server.auth import DEVICE_BOUND, Principal, Role, issue_token, require_role, revoke_tokens_of
from server.deps import DeviceDep, SessionDep, StateDep
from server.errors import ForbiddenError
from server.input_bounds import Name, RowIdInPath
from server.rate_limits import ClientAddress
from server.schemas import BlockingBody, FCodeIssue, FeedbackBody, Redeem
from server.services.fcodes import issue_fcodes, leave_preview, redeem_fcode
from server.services.feedback import (
    FeedbackIn,
    close_group,
    mark_blocking,
    submit_feedback,
    surfacing,
    vote,
)
from wire import FEEDBACK_PATH, leave_preview_path, redeem_path, vote_path
from wire.paths import FCODES_PATH, SURFACING_PATH, group_action_path

router = APIRouter(tags=["testers"])

# ADMIN passes every check (server.auth)
ReleaseEngineer = Annotated[Principal, Depends(require_role(Role.RELEASE_ENGINEER))]
Tester = Annotated[Principal, Depends(require_role(Role.TESTER))]
Reporter = Annotated[Principal, Depends(require_role(Role.TESTER, Role.DEVICE))]
Reader = Annotated[
    Principal, Depends(require_role(Role.VIEWER, Role.RELEASE_ENGINEER, Role.TESTER))
]


@router.post(FCODES_PATH, status_code=201, response_model=IssuedCodes)
def post_fcodes(body: FCodeIssue, session: SessionDep, _: ReleaseEngineer) -> IssuedCodes:
    return issue_fcodes(
        session, count=body.count, expires_in_s=body.expires_in_s, channel=body.channel
    )


def new_tester_token(session: Session, device_id: str) -> str:
    """One tester token per device: joining again replaces it, leaving preview revokes it
    (each under a new name: a revoked token's row is never rewritten)."""
    revoke_tokens_of(session, Role.TESTER, device_id)
    return issue_token(session, role=Role.TESTER, subject=device_id)


def _end_tester(session: Session, device_id: str) -> None:
    revoke_tokens_of(session, Role.TESTER, device_id)


@router.post(redeem_path("{device_id}"), response_model=Redemption)
def post_redeem(
    body: Redeem, device: DeviceDep, session: SessionDep, state: StateDep, address: ClientAddress
) -> Redemption:
    state.rate_limits.hit(state.rate_limits.redeem, address, device.device_id)
    return redeem_fcode(session, device, body.code, tester_token=new_tester_token)


@router.post(leave_preview_path("{device_id}"), response_model=ChannelChange)
def post_leave_preview(device: DeviceDep, session: SessionDep) -> ChannelChange:
    return leave_preview(session, device, end_tester=_end_tester)


@router.post(FEEDBACK_PATH, status_code=201, response_model=FeedbackReceipt)
def post_feedback(body: FeedbackBody, who: Reporter, session: SessionDep) -> FeedbackReceipt:
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


@router.post(vote_path("{group_id}"), response_model=VoteCount)
def post_vote(group_id: RowIdInPath, who: Tester, session: SessionDep) -> VoteCount:
    return vote(session, group_id, f"{who.role.value}:{who.subject}")


@router.get(SURFACING_PATH, response_model=Surfacing)
def get_surfacing(session: SessionDep, _: Reader, build: Annotated[Name, Query()]) -> Surfacing:
    return surfacing(session, build)


@router.post(group_action_path("{group_id}", "blocking"), response_model=FeedbackGroup)
def post_blocking(
    group_id: RowIdInPath, body: BlockingBody, session: SessionDep, _: ReleaseEngineer
) -> FeedbackGroup:
    return mark_blocking(session, group_id, blocking=body.blocking, reason=body.reason)


@router.post(group_action_path("{group_id}", "close"), response_model=FeedbackGroup)
def post_close(group_id: RowIdInPath, session: SessionDep, _: ReleaseEngineer) -> FeedbackGroup:
    return close_group(session, group_id)
