"""Request bodies of the HTTP API (pydantic validates them: a bad body is a 422 that names
the field, and nothing is stored). Reports are not here: `wire` defines those."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.api_models import Role
from server.input_bounds import (
    Count,
    Fraction,
    JsonObject,
    Name,
    OptionalName,
    Percentage,
    PerMinute,
    RowId,
    SaneDate,
    SaneTime,
    Seconds,
    Secret,
    Text,
)
from server.services.rollout_rules import DEFAULT_STUCK_TIMEOUT_S, DEFAULT_WAVES, GateConfig
from server.services.train_rules import STAGE_CHANNEL, Stage
from wire import (
    PROTOCOL_VERSION,
    CommandKind,
    ProtocolError,
    bounds,
    channel_topic,
    device_cmd_topic,
)
from wire.bounds import MAX_PATH_CHARS, MAX_SHORT_CHARS
from wire.messages import MAX_COMMANDS_PER_POLL

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME_CHARS: Final = 128  # of a token's name
MAX_CODES_PER_ISSUE: Final = 1000
MAX_FCODE_LIFETIME_S: Final = 90 * 24 * 3600
MAX_TEXT_CHARS: Final = bounds.MAX_TEXT_CHARS  # of one piece of tester feedback
MAX_WAVES: Final = 20
MAX_WINDOWS: Final = 24
MAX_LOG_CHARS: Final = 1024 * 1024  # the service answers 413 well before this
DEFAULT_TOKEN_LIFETIME_S: Final = 90 * 24 * 3600
MAX_TOKEN_LIFETIME_S: Final = 400 * 24 * 3600  # a yearly renewal with slack; no token lives on


def _topic_safe(value: str, what: str) -> str:
    """Channel, model and device id become MQTT topic segments; the contract says which fit."""
    try:
        if what == "device_id":
            device_cmd_topic(value)
        else:
            channel_topic(value, "m")
    except ProtocolError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return value


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enrollment_token: Secret
    device_id: Name
    model: Name
    channel: Name

    @field_validator("device_id", "model", "channel")
    @classmethod
    def _segment(cls, value: str, info: Any) -> str:
        return _topic_safe(value, str(info.field_name))


class ReleaseIn(BaseModel):
    """What `ota release publish --server` sends once the signed release is in the repository.
    Unknown keys are ignored, so the signing side may say more than the server needs."""

    model_config = ConfigDict(extra="ignore")

    version: Name
    channel: Name
    model: Name
    target_path: str = Field(min_length=1, max_length=MAX_PATH_CHARS)
    length: Count
    sha256: str = Field(max_length=64)
    notes: Text = ""
    published_at: SaneTime = Field(default_factory=lambda: datetime.now(UTC))
    release_counter: Count = 0
    percentage: Percentage = 100.0  # of the first rollout wave

    @field_validator("channel", "model")
    @classmethod
    def _segment(cls, value: str, info: Any) -> str:
        return _topic_safe(value, str(info.field_name))

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return value

    @field_validator("target_path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        try:
            return bounds.relative_path(value, "target_path")
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: CommandKind
    args: JsonObject = Field(default_factory=dict)


class CommandAckIn(BaseModel):
    """wire.CommandAck: the device has stored or handled these commands."""

    model_config = ConfigDict(extra="forbid")

    v: int = Field(ge=PROTOCOL_VERSION, le=PROTOCOL_VERSION)
    command_ids: list[Annotated[str, Field(min_length=1, max_length=MAX_SHORT_CHARS)]] = Field(
        max_length=MAX_COMMANDS_PER_POLL
    )


class RolloutUpdate(BaseModel):
    """Widen, narrow, pause or resume a rollout; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    percentage: Percentage | None = None
    paused: bool | None = None


# --------------------------------------------------------------------------- staged rollouts


class GatesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_success_rate: Fraction = GateConfig.min_success_rate
    max_rollback_rate: Fraction = GateConfig.max_rollback_rate
    min_devices: Count = GateConfig.min_devices
    min_soak_s: Seconds = GateConfig.min_soak_s
    max_blocking_issues: Count = GateConfig.max_blocking_issues


class RolloutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: RowId
    waves: list[Percentage] = Field(
        default_factory=lambda: list(DEFAULT_WAVES), max_length=MAX_WAVES
    )
    gates: GatesIn = Field(default_factory=GatesIn)
    windows: list[Annotated[str, Field(max_length=11)]] = Field(
        default_factory=list, max_length=MAX_WINDOWS
    )  # "HH:MM-HH:MM", UTC
    rate_per_minute: PerMinute = 0.0
    stuck_timeout_s: Seconds = Field(default=DEFAULT_STUCK_TIMEOUT_S, gt=0)


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = ""


class TrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Name
    model: Name
    week_of: SaneDate | None = None
    notes: Text = ""


class TrainAdvanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Name
    model: Name
    force: bool = False  # ignore the schedule's day (never the gates)


# --------------------------------------------------------------------------- beta testers


class FCodeIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=MAX_CODES_PER_ISSUE)
    expires_in_s: float = Field(gt=0, le=MAX_FCODE_LIFETIME_S, allow_inf_nan=False)
    channel: Name = STAGE_CHANNEL[Stage.PREVIEW]

    @field_validator("channel")
    @classmethod
    def _segment(cls, value: str) -> str:
        return _topic_safe(value, "channel")


class Redeem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Annotated[Secret, Field(min_length=1, max_length=64)]


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[Text, Field(min_length=1)]
    build: Name
    category: Annotated[Text, Field(max_length=64)] = ""
    device_id: Name | None = None
    logs: Annotated[str, Field(max_length=MAX_LOG_CHARS)] | None = None  # 413 over its limit


class BlockingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blocking: bool
    reason: Text = ""


# --------------------------------------------------------------------------- tokens


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: Annotated[Name, Field(pattern=r"^[^/\s]+$")]
    subject: OptionalName = ""  # the device id, for a device-bound token
    expires_in_s: float = Field(  # default: 90 days; at most 400
        default=DEFAULT_TOKEN_LIFETIME_S, gt=0, le=MAX_TOKEN_LIFETIME_S, allow_inf_nan=False
    )
