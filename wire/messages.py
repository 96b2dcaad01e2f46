"""Versioned JSON messages between devices and the server.

Every message carries `"v": 1`. Decoding is strict: a malformed message raises
`ProtocolError` and is never half-used.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final, TypeVar

from wire import bounds
from wire.bounds import MAX_NAME_CHARS, MAX_SHORT_CHARS, MAX_TEXT_CHARS
from wire.enums import CommandKind, FailureReason, UpdateState
from wire.errors import ProtocolError
from wire.topics import PROTOCOL_VERSION

MAX_COMMANDS_PER_POLL: Final = 1000
_E = TypeVar("_E", bound=enum.StrEnum)
MAX_ACKS: Final = 10_000


def _require(data: dict[str, Any], key: str) -> Any:
    if key not in data:
        raise ProtocolError(f"missing field {key!r}")
    return data[key]


def _name(data: dict[str, Any], key: str, *, required: bool = True, min_chars: int = 1) -> str:
    """A version, channel, model or device id (String(128) on the server)."""
    value = _require(data, key) if required else data.get(key, "")
    return bounds.text(value, key, MAX_NAME_CHARS, min_chars=min_chars)


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{key}: must be true or false")
    return value


def _member(kind: type[_E], value: Any, field: str) -> _E:
    if not isinstance(value, str):
        raise ProtocolError(f"{field}: must be a string")
    try:
        return kind(value)
    except ValueError:
        raise ProtocolError(f"{field}: unknown value {value[:64]!r}") from None


def _load_object(raw: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("message is not a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {data.get('v')!r}")
    return data


def _dump(obj: Any) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **asdict(obj)}, sort_keys=True).encode()


@dataclass(frozen=True)
class AvailabilityNotice:
    """Retained on `channel_topic`; also the `notice` in a poll answer.

    It says only *which* signed release to look at. Everything that matters for safety (hash,
    length, model, version) comes from TUF metadata, never from this message.
    """

    release_version: str
    target_path: str
    channel: str
    model: str
    rollout_id: str
    percentage: float  # 0..100: the device installs when its bucket is below this
    ring: str = ""
    notes: str = ""
    paused: bool = False

    def to_json(self) -> bytes:
        return _dump(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> AvailabilityNotice:
        return cls.from_dict(_load_object(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AvailabilityNotice:
        return cls(
            release_version=_name(data, "release_version"),
            target_path=bounds.relative_path(_require(data, "target_path"), "target_path"),
            channel=_name(data, "channel"),
            model=_name(data, "model"),
            rollout_id=bounds.text(_require(data, "rollout_id"), "rollout_id", MAX_SHORT_CHARS),
            percentage=bounds.number(_require(data, "percentage"), "percentage", 0, 100),
            ring=bounds.text(data.get("ring", ""), "ring", MAX_SHORT_CHARS * 2),
            notes=bounds.text(data.get("notes", ""), "notes", MAX_TEXT_CHARS),
            paused=_flag(data, "paused"),
        )


@dataclass(frozen=True)
class StatusReport:
    """One state change of one device. `(device_id, seq)` makes ingestion idempotent."""

    device_id: str
    seq: int
    state: UpdateState
    current_version: str
    target_version: str = ""
    slot: str = ""
    reason: FailureReason = FailureReason.NONE
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0  # device wall clock, seconds since epoch (informational only)

    def to_json(self) -> bytes:
        return _dump(self)

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, raw: bytes | str) -> StatusReport:
        return cls.from_dict(_load_object(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatusReport:
        return cls(
            device_id=_name(data, "device_id"),
            seq=bounds.integer(_require(data, "seq"), "seq", 0),
            state=_member(UpdateState, _require(data, "state"), "state"),
            current_version=_name(data, "current_version", min_chars=0),
            target_version=_name(data, "target_version", required=False, min_chars=0),
            slot=bounds.text(data.get("slot", ""), "slot", MAX_SHORT_CHARS),
            reason=_member(FailureReason, data.get("reason", ""), "reason"),
            detail=bounds.json_object(data.get("detail", {}), "detail"),
            at=bounds.number(data.get("at", 0.0), "at", 0, bounds.MAX_EPOCH_S),
        )


@dataclass(frozen=True)
class Command:
    """Sent on `device_cmd_topic` (QoS 1) and listed in poll answers."""

    command_id: str
    kind: CommandKind
    args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return _dump(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Command:
        return cls.from_dict(_load_object(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Command:
        command_id = _require(data, "command_id")
        return cls(
            command_id=bounds.text(command_id, "command_id", MAX_SHORT_CHARS, min_chars=1),
            kind=_member(CommandKind, _require(data, "kind"), "kind"),
            args=bounds.json_object(data.get("args", {}), "args"),
        )


@dataclass(frozen=True)
class CommandAck:
    """POSTed to `command_ack_path` by a device once it has stored or handled commands."""

    command_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "command_ids": list(self.command_ids)}

    @classmethod
    def from_json(cls, raw: bytes | str) -> CommandAck:
        ids = _load_object(raw).get("command_ids")
        if not isinstance(ids, list) or len(ids) > MAX_COMMANDS_PER_POLL:
            raise ProtocolError(f"command_ids must be a list of at most {MAX_COMMANDS_PER_POLL}")
        return cls(tuple(bounds.text(i, "command_ids", MAX_SHORT_CHARS, min_chars=1) for i in ids))


@dataclass(frozen=True)
class PollAnswer:
    """The HTTP answer to `poll_path`: what the server wants this device to run."""

    notice: AvailabilityNotice | None
    commands: tuple[Command, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "notice": None if self.notice is None else json.loads(self.notice.to_json()),
            "commands": [json.loads(c.to_json()) for c in self.commands],
        }

    @classmethod
    def from_json(cls, raw: bytes | str) -> PollAnswer:
        data = _load_object(raw)
        notice_raw = data.get("notice")
        if notice_raw is not None and not isinstance(notice_raw, dict):
            raise ProtocolError("notice must be an object or null")
        notice = None if notice_raw is None else AvailabilityNotice.from_dict(notice_raw)
        cmds = data.get("commands", [])
        if not isinstance(cmds, list) or len(cmds) > MAX_COMMANDS_PER_POLL:
            raise ProtocolError(f"commands must be a list of at most {MAX_COMMANDS_PER_POLL}")
        if not all(isinstance(c, dict) for c in cmds):
            raise ProtocolError("commands must be objects")
        return cls(notice=notice, commands=tuple(Command.from_dict(c) for c in cmds))


@dataclass(frozen=True)
class ReportsAck:
    """The HTTP answer to a reports POST: every seq the server now holds (new or duplicate)."""

    acked: tuple[int, ...]

    @classmethod
    def from_json(cls, raw: bytes | str) -> ReportsAck:
        data = _load_object(raw)
        acked = data.get("acked")
        if not isinstance(acked, list) or len(acked) > MAX_ACKS:
            raise ProtocolError(f"acked must be a list of at most {MAX_ACKS} integers")
        return cls(acked=tuple(bounds.integer(s, "acked", 0) for s in acked))

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "acked": list(self.acked)}


TRUSTED_TIMESTAMP_HEADER: Final = "X-OTA-Trusted-Timestamp"
MAX_TRUSTED_HEADER_CHARS: Final = 64


@dataclass(frozen=True)
class TrustedTimestamp:
    """The TUF timestamp a device trusts (the last one it verified): its version and expiry
    (seconds since the epoch). Sent with each poll in the `X-OTA-Trusted-Timestamp` header
    as `version=12; expires=1796162341`; an older agent sends none and an older server
    ignores it. The server compares it with the timestamp it serves (stale metadata: a
    freeze attack or a device that cannot reach the repository)."""

    version: int
    expires: float

    def to_header(self) -> str:
        return f"version={self.version}; expires={self.expires:.0f}"

    @classmethod
    def from_header(cls, text: str) -> TrustedTimestamp:
        if len(text) > MAX_TRUSTED_HEADER_CHARS:
            raise ProtocolError(
                f"{TRUSTED_TIMESTAMP_HEADER}: longer than {MAX_TRUSTED_HEADER_CHARS}"
            )
        fields: dict[str, str] = {}
        for part in text.split(";"):
            key, sep, value = part.strip().partition("=")
            if not sep or key in fields:
                raise ProtocolError(f"{TRUSTED_TIMESTAMP_HEADER}: expected version=N; expires=S")
            fields[key] = value.strip()
        if set(fields) != {"version", "expires"}:
            raise ProtocolError(f"{TRUSTED_TIMESTAMP_HEADER}: expected version=N; expires=S")
        try:
            version, expires = int(fields["version"]), float(fields["expires"])
        except ValueError:
            raise ProtocolError(f"{TRUSTED_TIMESTAMP_HEADER}: not numbers") from None
        return cls(
            version=bounds.integer(version, "version", 1, bounds.INT64_MAX),
            expires=bounds.number(expires, "expires", 0, bounds.MAX_EPOCH_S),
        )
