"""What the HTTP API answers, as pydantic models: services build them, routes declare them as
`response_model` (so /openapi.json documents every answer) and `server.api_client` parses the
same models back. Request bodies are in `server.schemas`; the device's messages are `wire`'s.

Times are aware datetimes that go over the wire as `datetime.isoformat()` text, as they always
have; a field a newer server adds is ignored by an older client."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, PlainSerializer

from server.services.rollout_rules import GateConfig, RolloutState, Verdict
from server.services.train_rules import Stage
from wire import CommandKind


def _iso(moment: datetime) -> str:
    return moment.isoformat()


IsoTime = Annotated[datetime, PlainSerializer(_iso, return_type=str, when_used="json")]


class Role(enum.StrEnum):
    """What a bearer token may do (`server.auth`); ADMIN passes every check."""

    ADMIN = "admin"
    RELEASE_ENGINEER = "release_engineer"
    VIEWER = "viewer"
    TESTER = "tester"
    DEVICE = "device"


# --------------------------------------------------------------------------- fleet and releases


class Release(BaseModel):
    """A signed release the server knows, with its current rollout (none for a bare release)."""

    id: int
    version: str
    channel: str
    model: str
    target_path: str
    length: int
    sha256: str
    notes: str
    published_at: IsoTime
    release_counter: int
    created_at: IsoTime
    rollout_id: str | None
    percentage: float | None
    paused: bool | None


class Device(BaseModel):
    """One enrolled device as its newest report left it; `silent` past the report timeout."""

    device_id: str
    model: str
    channel: str
    state: str
    current_version: str
    target_version: str
    slot: str
    reason: str
    last_seq: int | None
    enrolled_at: IsoTime
    last_seen: IsoTime | None
    last_report_at: IsoTime | None
    silent: bool
    # the TUF timestamp the device trusts, how far it lags the served one, and whether that is
    # past the threshold (server.services.staleness); None/False from an agent that says none
    trusted_timestamp_version: int | None = None
    trusted_timestamp_expires: IsoTime | None = None
    trust_age_s: float | None = None
    stale: bool = False


class Report(BaseModel):
    """One stored status report (`at` is the device's clock, seconds since the epoch)."""

    device_id: str
    seq: int
    state: str
    current_version: str
    target_version: str
    slot: str
    reason: str
    detail: dict[str, Any]
    at: float
    received_at: IsoTime
    via: str


class AckedCommands(BaseModel):
    """The device's commands the server now counts as delivered (unknown ids are left out)."""

    acked: list[str]


class QueuedCommand(BaseModel):
    device_id: str
    command_id: str
    kind: CommandKind
    args: dict[str, Any]


# --------------------------------------------------------------------------- staged rollouts


class RolloutGates(BaseModel):
    """The gate settings of one rollout, and the gates a release engineer overrode."""

    min_success_rate: float = GateConfig.min_success_rate
    max_rollback_rate: float = GateConfig.max_rollback_rate
    min_devices: int = GateConfig.min_devices
    min_soak_s: float = GateConfig.min_soak_s
    max_blocking_issues: int = GateConfig.max_blocking_issues
    overridden: list[str] = []


class GateNumbers(BaseModel):
    """What the last evaluation counted, and its verdict (`gate`: the one that failed or
    holds, "" when all pass)."""

    success: int
    rolled_back: int
    failed: int
    in_progress: int
    finished: int
    expected: int
    success_rate: float
    rollback_rate: float
    soaked_s: float
    blocking_issues: int
    verdict: Verdict
    gate: str


class AuditEntry(BaseModel):
    at: IsoTime
    actor: str
    action: str
    reason: str
    detail: dict[str, Any]


class RolloutStatus(BaseModel):
    """A staged rollout: its waves, where it is, its gates and their last numbers (None until
    the first evaluation), why it is paused, and the audit trail."""

    rollout_id: str
    release_id: int
    version: str
    channel: str
    model: str
    state: RolloutState
    waves: list[float]
    wave_index: int
    waves_reached: list[float]
    percentage: float
    paused: bool
    paused_reason: str
    paused_gate: str
    gates: RolloutGates
    numbers: GateNumbers | None
    stale_devices: int | None = None  # of the release's channel+model; None: not counted
    windows: list[str]
    rate_per_minute: float
    stuck_timeout_s: float
    wave_started_at: IsoTime
    audit: list[AuditEntry]


# --------------------------------------------------------------------------- the weekly train


class TrainStatus(BaseModel):
    """One build on the train: its stage, when each stage is due, each ring's rollout state
    ("" before the ring's rollout exists)."""

    version: str
    model: str
    week_of: date
    stage: Stage
    notes: str
    due: dict[str, IsoTime]
    rings: dict[str, str]


class TrainAdvance(BaseModel):
    """The train after an advance: the stage it entered ("" when it stayed) and why."""

    train: TrainStatus
    moved_to: str
    why: str


class Announcement(BaseModel):
    """What testers are told is coming (also retained on the preview announce topic)."""

    v: int
    version: str
    model: str
    notes: str
    preview_at: IsoTime


# --------------------------------------------------------------------------- beta testers


class IssuedCodes(BaseModel):
    codes: list[str]  # plaintext, shown once
    channel: str
    expires_at: IsoTime


class ChannelChange(BaseModel):
    """A device moved between channels (leaving preview)."""

    device_id: str
    channel: str
    previous_channel: str


class Redemption(ChannelChange):
    """A spent F-code: the device's new channel and its tester token (shown once)."""

    tester_token: str


class FeedbackReceipt(BaseModel):
    id: int
    group_id: int
    build: str
    logs_stored: bool


class VoteCount(BaseModel):
    group_id: int
    votes: int


class FeedbackGroup(BaseModel):
    """Reports about one problem in one build: testers' similar texts, or one agent failure
    signature. A blocking group holds the build's gate while it is open."""

    group_id: int
    build: str
    kind: str
    title: str
    category: str
    blocking: bool
    blocking_reason: str
    closed: bool
    last_seen: IsoTime


class RankedGroup(FeedbackGroup):
    """A group in the order it surfaces, with what it counts."""

    rank: int
    devices: int
    reports: int
    votes: int
    score: float
    samples: list[str]


class Surfacing(BaseModel):
    """The open groups of a build, what surfaces first first."""

    build: str
    generated_at: IsoTime
    groups: list[RankedGroup]


# --------------------------------------------------------------------------- tokens


class IssuedToken(BaseModel):
    name: str
    role: Role
    token: str  # shown once; the server keeps its sha256
    expires_at: IsoTime


class TokenInfo(BaseModel):
    """A token as the admin sees it: never the secret or its hash."""

    name: str
    role: Role
    subject: str
    created_at: IsoTime
    revoked_at: IsoTime | None
    expires_at: IsoTime
    last_used_at: IsoTime | None  # to the minute


class RevokedToken(BaseModel):
    name: str
    revoked: bool


# --------------------------------------------------------------------------- device identity


class Challenge(BaseModel):
    """A single-use nonce for one device id to sign; worthless after `expires_at`."""

    device_id: str
    nonce: str
    expires_at: IsoTime


class DeviceAccess(BaseModel):
    """A short-lived access token, obtained by signing a challenge with the device's key."""

    device_id: str
    token: str
    expires_at: IsoTime
    expires_in_s: float


class BrokerSecret(BaseModel):
    """The device's broker password (shown once: the server keeps a `$7$` hash)."""

    device_id: str
    broker_user: str
    broker_secret: str


class Enrolled(BaseModel):
    """What enrollment answers: the first access token and the broker secret."""

    device_id: str
    token: str
    expires_at: IsoTime
    expires_in_s: float
    broker_user: str
    broker_secret: str
    reenrolled: bool


class EnrollmentTokenInfo(BaseModel):
    """An admin-made enrollment token as the admin sees it: never the secret or its hash."""

    name: str
    model: str | None
    channel: str | None
    max_uses: int | None
    uses: int
    created_by: str
    created_at: IsoTime
    expires_at: IsoTime
    revoked_at: IsoTime | None


class IssuedEnrollmentToken(EnrollmentTokenInfo):
    token: str  # shown once


class DeviceAuditEntry(BaseModel):
    device_id: str
    at: IsoTime
    actor: str
    action: str
    reason: str
    detail: dict[str, Any]


# --------------------------------------------------------------------------- health


class WorkerHealth(BaseModel):
    """One background worker: whether its thread runs, how many ticks ran and failed (each
    failure logged with its traceback), messages it refused, and when it last ran. A worker
    whose work must happen once across replicas says whether this replica leads it (the
    others skip their ticks, counted in `standby`); None for a worker every replica runs."""

    name: str
    alive: bool
    ticks: int
    failures: int
    refused: int
    last_run: IsoTime | None
    last_failure: str
    leading: bool | None = None
    standby: int = 0


class Caller(BaseModel):
    """Who a token belongs to (GET /api/v1/whoami)."""

    role: Role
    subject: str


class RepoFreshness(BaseModel):
    """How long devices keep trusting the served repository without a new timestamp."""

    timestamp_version: int
    expires: IsoTime
    expires_in_s: float  # negative: expired, devices refuse every update
    renewing: bool  # the server re-signs timestamp (and snapshot) with its online keys
    renew_every_s: float


class Health(BaseModel):
    """`GET /health`: the served repository's freshness, what to look at, and how each
    background worker is (alive, ticks, failures, last run)."""

    ok: bool
    repository: RepoFreshness | None  # None: this server serves no TUF repository
    problems: list[str]
    workers: list[WorkerHealth] = []


# --------------------------------------------------------------------------- refusals


class FieldProblem(BaseModel):
    """One broken field of a malformed request: where (`["body", "seq"]`) and why."""

    loc: list[str]
    msg: str
    type: str


REFUSALS: dict[int, str] = {
    400: "Malformed request (e.g. an invalid Content-Length)",
    401: "No credential, or one that matches nothing",
    403: "A valid credential that may not do this",
    404: "No such device, release, rollout, group or file",
    409: "It exists already, or conflicts with what is stored",
    410: "It existed but is no longer valid (an expired F-code)",
    411: "A request body without Content-Length",
    413: "A request body or a part of it over its size limit",
    422: "A field out of its bounds: which field and why; nothing was stored",
    429: "Too many requests: try again after Retry-After seconds",
    503: "The database is away for a moment: nothing was stored; retry after Retry-After s",
}
# Every refusal: `{"detail": ...}`, why as text or as the list of broken fields. A schema of its
# own, not a `model`: an HTML page's refusals are JSON too, which a model would document under
# the page's media type.
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": FieldProblem.model_json_schema()},
            ]
        }
    },
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": why, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    for status, why in REFUSALS.items()
}
