"""Request bodies of the HTTP API (pydantic validates them: a bad body is a 422 that names
the field, and nothing is stored). Reports are not here: `wire` defines those."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wire import CommandKind, ProtocolError, channel_topic, device_cmd_topic

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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

    enrollment_token: str
    device_id: str
    model: str
    channel: str

    @field_validator("device_id", "model", "channel")
    @classmethod
    def _segment(cls, value: str, info: Any) -> str:
        return _topic_safe(value, str(info.field_name))


class ReleaseIn(BaseModel):
    """What `ota release publish --server` sends once the signed release is in the repository.
    Unknown keys are ignored, so the signing side may say more than the server needs."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(min_length=1, max_length=128)
    channel: str
    model: str
    target_path: str = Field(min_length=1, max_length=1024)
    length: int = Field(ge=0)
    sha256: str
    notes: str = ""
    published_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    release_counter: int = Field(default=0, ge=0)
    percentage: float = Field(default=100.0, ge=0, le=100)  # of the first rollout wave

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
        parts = value.split("/")
        if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError("target_path must be a relative path without '.' or '..' parts")
        return value

    @field_validator("published_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: CommandKind
    args: dict[str, Any] = Field(default_factory=dict)


class RolloutUpdate(BaseModel):
    """Widen, narrow, pause or resume a rollout; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    percentage: float | None = Field(default=None, ge=0, le=100)
    paused: bool | None = None
