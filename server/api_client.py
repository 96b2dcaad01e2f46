"""`OtaApi`: the one typed client of the server's HTTP API, for the `ota` CLI, the bench, the
tests and the demo. It sends the request bodies of `server.schemas` to the paths of
`wire.paths` and parses each answer into the model of `server.api_models` the route declares.

Every refusal, and a server that cannot be reached, is one `ApiError` carrying the HTTP status
and the server's own message. The device does not use this: it speaks the wire protocol
through `agent.server_api` (urllib3 only, no httpx or pydantic on a device)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from server.api_models import (
    Announcement,
    Caller,
    ChannelChange,
    Device,
    DeviceAuditEntry,
    EnrollmentTokenInfo,
    FeedbackGroup,
    FeedbackReceipt,
    Health,
    IssuedCodes,
    IssuedEnrollmentToken,
    IssuedToken,
    QueuedCommand,
    Redemption,
    Release,
    Report,
    RevokedToken,
    RolloutStatus,
    Surfacing,
    TokenInfo,
    TrainAdvance,
    TrainStatus,
    VoteCount,
)
from server.schemas import (
    BlockingBody,
    CommandIn,
    DeviceResetIn,
    EnrollmentTokenIn,
    FCodeIssue,
    FeedbackBody,
    ReasonIn,
    Redeem,
    ReleaseIn,
    RolloutIn,
    RolloutUpdate,
    TokenIn,
    TrainAdvanceIn,
    TrainIn,
)
from wire import FEEDBACK_PATH, leave_preview_path, redeem_path, vote_path
from wire.paths import (
    ADVANCE_TRAIN_PATH,
    ANNOUNCEMENTS_PATH,
    DEVICES_PATH,
    ENROLLMENT_TOKENS_PATH,
    EVALUATE_ROLLOUTS_PATH,
    FCODES_PATH,
    HEALTH_PATH,
    RELEASES_PATH,
    REPORTS_PATH,
    ROLLOUTS_PATH,
    SURFACING_PATH,
    TOKENS_PATH,
    TRAIN_PATH,
    WHOAMI_PATH,
    commands_path,
    device_audit_path,
    device_reset_path,
    enrollment_token_path,
    group_action_path,
    rollout_action_path,
    rollout_path,
    token_path,
)

Answer = TypeVar("Answer", bound=BaseModel)
DEFAULT_TIMEOUT_S = 20.0
MESSAGE_CHARS = 200  # of a body that is not the server's JSON error


class ApiError(Exception):
    """The server refused a request (`status`: its HTTP status, `message`: its reason), or
    gave no answer at all (`status` None, `message`: what went wrong on the way)."""

    def __init__(self, method: str, where: str, status: int | None, message: str) -> None:
        self.method, self.where, self.status, self.message = method, where, status, message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.status is None:
            return f"cannot reach {self.where}: {self.message}"
        return f"{self.method} {self.where}: HTTP {self.status}: {self.message}"


def server_message(response: httpx.Response) -> str:
    """The reason a server gave: FastAPI's `detail` (a text, or the fields a 422 names)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(_field_problem(item) for item in detail)
    return response.text[:MESSAGE_CHARS] or response.reason_phrase


def _field_problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ())[1:])  # past "body"/"query"
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", ""))


class OtaApi:
    """The server's API as one user (the bearer `token`) sees it. A context manager; pass
    `transport` to talk to an ASGI app or a test double instead of the network."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token:  # no token: only what anyone may ask (GET /health)
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> OtaApi:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ----------------------------------------------------------------------- transport

    def _call(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The JSON of a 2xx answer; ApiError for any other answer or none."""
        payload = None if body is None else body.model_dump(mode="json", exclude_unset=True)
        try:
            response = self._send(method, path, payload, params)
        except httpx.HTTPError as exc:
            raise ApiError(method, self.base_url, None, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise ApiError(method, path, response.status_code, server_message(response))
        try:
            return response.json()
        except ValueError:
            message = f"the answer is not JSON: {response.text[:MESSAGE_CHARS]!r}"
            raise ApiError(method, path, response.status_code, message) from None

    def _send(
        self, method: str, path: str, payload: Any, params: dict[str, Any] | None
    ) -> httpx.Response:
        """A GET whose kept-alive connection the server dropped under it (uvicorn closes idle
        ones after 5 s) is sent again, once, on a new connection; nothing else is repeated."""
        try:
            return self._http.request(method, path, json=payload, params=params)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            if method != "GET":
                raise
        return self._http.request(method, path, json=payload, params=params)

    def _one(self, answer: type[Answer], method: str, path: str, **request: Any) -> Answer:
        return answer.model_validate(self._call(method, path, **request))

    def _many(self, answer: type[Answer], method: str, path: str, **request: Any) -> list[Answer]:
        return [answer.model_validate(item) for item in self._call(method, path, **request)]

    # ----------------------------------------------------------------------- releases, fleet

    def register_release(self, release: ReleaseIn) -> Release:
        """What `ota release publish --server` does once the release is signed (409: known)."""
        return self._one(Release, "POST", RELEASES_PATH, body=release)

    def health(self) -> Health:
        """GET /health: no token needed; how long until the served repository expires."""
        return self._one(Health, "GET", HEALTH_PATH)

    def whoami(self) -> Caller:
        return self._one(Caller, "GET", WHOAMI_PATH)

    def releases(self) -> list[Release]:
        return self._many(Release, "GET", RELEASES_PATH)

    def devices(self) -> list[Device]:
        return self._many(Device, "GET", DEVICES_PATH)

    def reports(self, device_id: str | None = None, limit: int = 100) -> list[Report]:
        """Newest first."""
        params: dict[str, Any] = {"limit": limit}
        if device_id is not None:
            params["device_id"] = device_id
        return self._many(Report, "GET", REPORTS_PATH, params=params)

    def send_command(self, device_id: str, command: CommandIn) -> QueuedCommand:
        return self._one(QueuedCommand, "POST", commands_path(device_id), body=command)

    # ----------------------------------------------------------------------- rollouts

    def update_rollout(self, rollout_id: str, update: RolloutUpdate) -> Release:
        """A plain rollout's percentage or paused flag (the one `register_release` made)."""
        return self._one(Release, "POST", rollout_path(rollout_id), body=update)

    def create_rollout(self, rollout: RolloutIn) -> RolloutStatus:
        return self._one(RolloutStatus, "POST", ROLLOUTS_PATH, body=rollout)

    def rollouts(self) -> list[RolloutStatus]:
        """Every staged rollout, newest first."""
        return self._many(RolloutStatus, "GET", ROLLOUTS_PATH)

    def rollout(self, rollout_id: str) -> RolloutStatus:
        return self._one(RolloutStatus, "GET", rollout_path(rollout_id))

    def evaluate_rollouts(self) -> list[RolloutStatus]:
        """One scheduler tick, now: every active rollout evaluated."""
        return self._many(RolloutStatus, "POST", EVALUATE_ROLLOUTS_PATH)

    def change_rollout(self, rollout_id: str, action: str, reason: str = "") -> RolloutStatus:
        """`action`: "pause", "resume", "abort", or "override" (which needs a reason)."""
        path = rollout_action_path(rollout_id, action)
        return self._one(RolloutStatus, "POST", path, body=ReasonIn(reason=reason))

    # ----------------------------------------------------------------------- the train

    def trains(self) -> list[TrainStatus]:
        return self._many(TrainStatus, "GET", TRAIN_PATH)

    def start_train(self, train: TrainIn) -> TrainStatus:
        return self._one(TrainStatus, "POST", TRAIN_PATH, body=train)

    def advance_train(self, advance: TrainAdvanceIn) -> TrainAdvance:
        return self._one(TrainAdvance, "POST", ADVANCE_TRAIN_PATH, body=advance)

    def announcements(self) -> list[Announcement]:
        return self._many(Announcement, "GET", ANNOUNCEMENTS_PATH)

    # ----------------------------------------------------------------------- beta testers

    def issue_fcodes(self, issue: FCodeIssue) -> IssuedCodes:
        return self._one(IssuedCodes, "POST", FCODES_PATH, body=issue)

    def redeem(self, device_id: str, code: str) -> Redemption:
        """As the device (its credential is the token): spend an F-code."""
        return self._one(Redemption, "POST", redeem_path(device_id), body=Redeem(code=code))

    def leave_preview(self, device_id: str) -> ChannelChange:
        """As the device: back to stable."""
        return self._one(ChannelChange, "POST", leave_preview_path(device_id))

    def send_feedback(self, feedback: FeedbackBody) -> FeedbackReceipt:
        return self._one(FeedbackReceipt, "POST", FEEDBACK_PATH, body=feedback)

    def vote(self, group_id: int) -> VoteCount:
        return self._one(VoteCount, "POST", vote_path(group_id))

    def surfacing(self, build: str) -> Surfacing:
        """The open feedback groups of `build`, ranked."""
        return self._one(Surfacing, "GET", SURFACING_PATH, params={"build": build})

    def mark_blocking(self, group_id: int, mark: BlockingBody) -> FeedbackGroup:
        path = group_action_path(group_id, "blocking")
        return self._one(FeedbackGroup, "POST", path, body=mark)

    def close_group(self, group_id: int) -> FeedbackGroup:
        return self._one(FeedbackGroup, "POST", group_action_path(group_id, "close"))

    # ----------------------------------------------------------------------- tokens (admin)

    def create_token(self, token: TokenIn) -> IssuedToken:
        return self._one(IssuedToken, "POST", TOKENS_PATH, body=token)

    def tokens(self) -> list[TokenInfo]:
        return self._many(TokenInfo, "GET", TOKENS_PATH)

    def revoke_token(self, name: str) -> RevokedToken:
        return self._one(RevokedToken, "DELETE", token_path(name))

    # ----------------------------------------------------------------------- device identity

    def reset_device(self, device_id: str, reason: str) -> DeviceAuditEntry:
        body = DeviceResetIn(reason=reason)
        return self._one(DeviceAuditEntry, "POST", device_reset_path(device_id), body=body)

    def device_audit(self, device_id: str) -> list[DeviceAuditEntry]:
        return self._many(DeviceAuditEntry, "GET", device_audit_path(device_id))

    def create_enrollment_token(self, token: EnrollmentTokenIn) -> IssuedEnrollmentToken:
        return self._one(IssuedEnrollmentToken, "POST", ENROLLMENT_TOKENS_PATH, body=token)

    def enrollment_tokens(self) -> list[EnrollmentTokenInfo]:
        return self._many(EnrollmentTokenInfo, "GET", ENROLLMENT_TOKENS_PATH)

    def revoke_enrollment_token(self, name: str) -> EnrollmentTokenInfo:
        return self._one(EnrollmentTokenInfo, "DELETE", enrollment_token_path(name))
