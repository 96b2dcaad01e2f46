"""Versioned JSON messages between devices and the server.

Every message carries `"v": 1`. Decoding is strict: a malformed message raises
`ProtocolError` and is never half-used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from wire.enums import CommandKind, FailureReason, UpdateState
from wire.errors import ProtocolError
from wire.topics import PROTOCOL_VERSION


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ProtocolError(f"missing field {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"field {key!r} has the wrong type")
    return value


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
        pct = _require(data, "percentage", (int, float))
        if isinstance(pct, bool) or not 0 <= pct <= 100:
            raise ProtocolError("percentage must be within 0..100")
        return cls(
            release_version=_require(data, "release_version", str),
            target_path=_require(data, "target_path", str),
            channel=_require(data, "channel", str),
            model=_require(data, "model", str),
            rollout_id=_require(data, "rollout_id", str),
            percentage=float(pct),
            ring=str(data.get("ring", "")),
            notes=str(data.get("notes", "")),
            paused=bool(data.get("paused", False)),
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
        seq = _require(data, "seq", int)
        if seq < 0:
            raise ProtocolError("seq must be >= 0")
        try:
            state = UpdateState(_require(data, "state", str))
            reason = FailureReason(data.get("reason", ""))
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        detail = data.get("detail", {})
        if not isinstance(detail, dict):
            raise ProtocolError("detail must be an object")
        at = data.get("at", 0.0)
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise ProtocolError("at must be a number")
        return cls(
            device_id=_require(data, "device_id", str),
            seq=seq,
            state=state,
            current_version=_require(data, "current_version", str),
            target_version=str(data.get("target_version", "")),
            slot=str(data.get("slot", "")),
            reason=reason,
            detail=detail,
            at=float(at),
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
        try:
            kind = CommandKind(_require(data, "kind", str))
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        args = data.get("args", {})
        if not isinstance(args, dict):
            raise ProtocolError("args must be an object")
        return cls(command_id=_require(data, "command_id", str), kind=kind, args=args)


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
        notice = None if notice_raw is None else AvailabilityNotice.from_dict(notice_raw)
        cmds = data.get("commands", [])
        if not isinstance(cmds, list):
            raise ProtocolError("commands must be a list")
        return cls(notice=notice, commands=tuple(Command.from_dict(c) for c in cmds))


@dataclass(frozen=True)
class ReportsAck:
    """The HTTP answer to a reports POST: every seq the server now holds (new or duplicate)."""

    acked: tuple[int, ...]

    @classmethod
    def from_json(cls, raw: bytes | str) -> ReportsAck:
        data = _load_object(raw)
        acked = data.get("acked")
        if not isinstance(acked, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in acked
        ):
            raise ProtocolError("acked must be a list of integers")
        return cls(acked=tuple(acked))

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "acked": list(self.acked)}
