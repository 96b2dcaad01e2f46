"""The wire contract between devices and the server.

The agent owns this module; the server imports it, never the other way round. Every message
is versioned JSON (`"v": 1`) and every topic carries the version segment (`ota/v1/...`).
Decoding is strict: a malformed message raises `ProtocolError` and is never half-used.

Also here, because both sides and the signing side must agree on them: the custom fields a
TUF target carries, the HTTP paths, and the enums that go into reports (states, failure
reasons), so the server can count failures by cause.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

PROTOCOL_VERSION: Final = 1
TOPIC_PREFIX: Final = f"ota/v{PROTOCOL_VERSION}"

# --------------------------------------------------------------------------- topics


def channel_topic(channel: str, model: str) -> str:
    """Retained availability notice for every device of `model` on `channel`."""
    return f"{TOPIC_PREFIX}/channel/{_segment(channel)}/{_segment(model)}"


def device_cmd_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}/device/{_segment(device_id)}/cmd"


def device_status_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}/device/{_segment(device_id)}/status"


def announce_topic(channel: str) -> str:
    """Retained announcement of the coming build for the testers of `channel` (the train)."""
    return f"{TOPIC_PREFIX}/announce/{_segment(channel)}"


STATUS_WILDCARD: Final = f"{TOPIC_PREFIX}/device/+/status"


def device_id_from_status_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{TOPIC_PREFIX}/device" or parts[4] != "status":
        raise ProtocolError(f"not a status topic: {topic!r}")
    return parts[3]


def _segment(value: str) -> str:
    if not value or any(c in value for c in "/+#\x00") or len(value) > 128:
        raise ProtocolError(f"invalid topic segment: {value!r}")
    return value


# --------------------------------------------------------------------------- HTTP paths

API_PREFIX: Final = f"/api/v{PROTOCOL_VERSION}"
ENROLL_PATH: Final = f"{API_PREFIX}/enroll"
TUF_METADATA_PATH: Final = "/tuf/metadata/"
TUF_TARGETS_PATH: Final = "/tuf/targets/"


def poll_path(device_id: str) -> str:
    """GET: what should this device run (the notice for its channel/model, pending commands)."""
    return f"{API_PREFIX}/devices/{device_id}/poll"


def reports_path(device_id: str) -> str:
    """POST a JSON list of StatusReport; the answer acknowledges sequence numbers."""
    return f"{API_PREFIX}/devices/{device_id}/reports"


def redeem_path(device_id: str) -> str:
    """POST {"code"}: spend an F-code; the device joins the code's channel (beta testers)."""
    return f"{API_PREFIX}/devices/{device_id}/redeem"


def leave_preview_path(device_id: str) -> str:
    """POST: back to stable, keeping the running build until stable passes it."""
    return f"{API_PREFIX}/devices/{device_id}/leave-preview"


FEEDBACK_PATH: Final = f"{API_PREFIX}/feedback"  # POST {text, build, category, device_id, logs}


def vote_path(group_id: int | str) -> str:
    """POST: a tester's vote for a group of feedback (once per tester and group)."""
    return f"{API_PREFIX}/feedback/groups/{group_id}/vote"


# --------------------------------------------------------------------------- enums


class UpdateState(enum.StrEnum):
    """The agent's persisted states; every report names the state it entered."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    INSTALLED = "installed"  # slot written, length + hash matched, not yet bootable
    REBOOTING = "rebooting"  # trial boot of the new slot armed
    TRIAL = "trial"  # running the new slot, health check pending
    COMMITTED = "committed"  # new slot marked good
    ROLLING_BACK = "rolling_back"  # trial failed (health check); rebooting into the old slot
    ROLLED_BACK = "rolled_back"  # back on the old slot after a failed trial
    FAILED = "failed"  # update abandoned before the slot became bootable
    DEFERRED = "deferred"  # a device policy said "not now"


class FailureReason(enum.StrEnum):
    """Why an update did not go through. Goes into reports; the server counts by it."""

    NONE = ""
    METADATA = "metadata"  # TUF refresh failed (signature, expiry, rollback, ...)
    TARGET_NOT_FOUND = "target_not_found"
    WRONG_MODEL = "wrong_model"
    DOWNGRADE = "downgrade"
    DOWNLOAD = "download"  # transport failed after retries
    HASH_MISMATCH = "hash_mismatch"
    LENGTH_MISMATCH = "length_mismatch"
    SLOT_TOO_SMALL = "slot_too_small"
    DISK_FULL = "disk_full"
    BOOT_FAILED = "boot_failed"  # bootloader fell back to the old slot
    HEALTH_CHECK = "health_check"
    CANCELLED = "cancelled"
    POLICY = "policy"
    INTERNAL = "internal"


class CommandKind(enum.StrEnum):
    CHECK_NOW = "check_now"
    CANCEL = "cancel"
    ROLLBACK = "rollback"


# --------------------------------------------------------------------------- TUF target custom


class TargetCustom:
    """Keys of the `custom` object the signing side puts on every ROM target.

    TUF signs these, so a compromised server cannot change them: the agent refuses a target
    whose model is not its own or whose version is not newer than what it runs.
    """

    VERSION: Final = "version"
    CHANNEL: Final = "channel"
    MODEL: Final = "model"
    HARDWARE_IDS: Final = "hardware_ids"  # list[str]; defaults to [model]
    NOTES: Final = "notes"
    PUBLISHED_AT: Final = "published_at"  # RFC 3339, UTC
    RELEASE_COUNTER: Final = "release_counter"  # int, strictly increasing per channel+model
    CHUNK_SIZE: Final = "chunk_size"  # int, bytes; optional
    CHUNK_SHA256: Final = "chunk_sha256"  # list[str], optional


def target_name(model: str, channel: str, version: str, filename: str) -> str:
    """The TUF target path of a ROM build: `<model>/<channel>/<version>/<filename>`."""
    for part in (model, channel, version, filename):
        if not part or "/" in part or part in (".", "..") or part.startswith("."):
            raise ProtocolError(f"invalid target path component: {part!r}")
    return f"{model}/{channel}/{version}/{filename}"


# --------------------------------------------------------------------------- messages


class ProtocolError(ValueError):
    """A message or name that does not follow the contract."""


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
