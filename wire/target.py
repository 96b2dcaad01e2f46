"""What the signing side signs about a ROM build, beyond TUF's length and hashes.

A TUF target carries a free-form `custom` object. For a ROM build it holds `TargetCustom`,
built by `signing` with `to_custom()` and read by the agent with `from_custom()`. TUF signs
these fields, so a compromised server or broker cannot change them: the agent refuses a target
whose model, channel or version is not one it may install.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wire.errors import ProtocolError

MAX_NOTES = 64 * 1024
# The lines of an Android OTA package's payload_properties.txt (AOSP's brillo_update_payload
# writes these four); update_engine takes them as headers. Nothing else is signed into a
# target: a header such as POWERWASH=1 or SWITCH_SLOT_ON_REBOOT is the agent's to choose.
PAYLOAD_PROPERTY_KEYS = ("FILE_HASH", "FILE_SIZE", "METADATA_HASH", "METADATA_SIZE")
MAX_PROPERTY_VALUE = 128


@dataclass(frozen=True)
class AndroidPayload:
    """Where update_engine finds the payload inside the signed target file (an OTA zip's
    `payload.bin`, stored uncompressed: `offset` and `size` in bytes) and the
    payload_properties.txt lines handed to it as headers. Signed with the target, so a
    server or mirror cannot change what a phone asks update_engine to check."""

    offset: int
    size: int
    properties: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.offset < 2**63 or not 0 < self.size < 2**63:
            raise ProtocolError("android payload: offset must be >= 0 and size > 0")
        values = {}
        for line in self.properties:
            key, sep, value = line.partition("=")
            if key not in PAYLOAD_PROPERTY_KEYS or not sep or key in values:
                known = ", ".join(PAYLOAD_PROPERTY_KEYS)
                raise ProtocolError(
                    f"android payload property {line[:40]!r}: one line each of {known} only"
                )
            if not 0 < len(value) <= MAX_PROPERTY_VALUE or not value.isprintable() or " " in value:
                raise ProtocolError(f"android payload property {key}: bad value")
            values[key] = value
        if "FILE_HASH" not in values or values.get("FILE_SIZE") != str(self.size):
            raise ProtocolError("android payload: FILE_HASH and a FILE_SIZE equal to size needed")

    def to_custom(self) -> dict[str, Any]:
        return {"offset": self.offset, "size": self.size, "properties": list(self.properties)}

    @classmethod
    def from_custom(cls, value: object) -> AndroidPayload | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ProtocolError("target custom field 'android_payload' must be an object")
        return cls(
            offset=_required_count(value, "offset"),
            size=_required_count(value, "size"),
            properties=_texts(value, "properties"),
        )


@dataclass(frozen=True)
class TargetCustom:
    """The signed fields of one ROM target (`custom` in targets metadata)."""

    version: str
    channel: str
    model: str
    hardware_ids: tuple[str, ...] = ()  # models that may install it; empty means (model,)
    notes: str = ""
    published_at: str = ""  # RFC 3339, UTC
    release_counter: int = 0  # strictly increasing per channel+model
    chunk_size: int | None = None  # bytes; with chunk_sha256, lets a download resume
    chunk_sha256: tuple[str, ...] = ()
    android_payload: AndroidPayload | None = None  # an Android OTA package's payload

    @property
    def models(self) -> tuple[str, ...]:
        """Every model this build may go onto."""
        return self.hardware_ids or (self.model,)

    def to_custom(self) -> dict[str, Any]:
        custom: dict[str, Any] = {
            "version": self.version,
            "channel": self.channel,
            "model": self.model,
            "hardware_ids": list(self.models),
            "notes": self.notes,
            "published_at": self.published_at,
            "release_counter": self.release_counter,
        }
        if self.chunk_size is not None:
            custom["chunk_size"] = self.chunk_size
            custom["chunk_sha256"] = list(self.chunk_sha256)
        if self.android_payload is not None:
            custom["android_payload"] = self.android_payload.to_custom()
        return custom

    @classmethod
    def from_custom(cls, custom: object) -> TargetCustom:
        """Parse a target's `custom` object; raise `ProtocolError` unless it is a ROM build's."""
        if not isinstance(custom, dict):
            raise ProtocolError("target custom fields are not an object")
        return cls(
            version=_text(custom, "version", required=True),
            channel=_text(custom, "channel", required=True),
            model=_text(custom, "model", required=True),
            hardware_ids=_texts(custom, "hardware_ids"),
            notes=_text(custom, "notes", limit=MAX_NOTES),
            published_at=_text(custom, "published_at"),
            release_counter=_count(custom, "release_counter") or 0,
            chunk_size=_count(custom, "chunk_size"),
            chunk_sha256=_texts(custom, "chunk_sha256"),
            android_payload=AndroidPayload.from_custom(custom.get("android_payload")),
        )


@dataclass(frozen=True)
class DeltaCustom:
    """The signed fields of a delta target (`custom` in targets metadata): a patch that turns
    the build `source_version` (whose image has `source_sha256` and `source_length`) into the
    full target `target_path` (`target_sha256`, `target_length`). A device applies it only
    onto a slot that holds exactly the source image, and installs the result only when it
    matches the full target's signed length and hashes. Not a ROM target: no `version` key,
    so `is_rom_target` says False and release listings leave it out.
    """

    source_version: str
    source_sha256: str
    source_length: int
    target_path: str
    target_sha256: str
    target_length: int
    format: int = 1

    def to_custom(self) -> dict[str, Any]:
        return {
            "delta": {
                "format": self.format,
                "source_version": self.source_version,
                "source_sha256": self.source_sha256,
                "source_length": self.source_length,
                "target_path": self.target_path,
                "target_sha256": self.target_sha256,
                "target_length": self.target_length,
            }
        }

    @classmethod
    def from_custom(cls, custom: object) -> DeltaCustom:
        """Parse a target's `custom` object; raise `ProtocolError` unless it is a delta's."""
        delta = custom.get("delta") if isinstance(custom, dict) else None
        if not isinstance(delta, dict):
            raise ProtocolError("target custom fields are not a delta's")
        return cls(
            source_version=_text(delta, "source_version", required=True),
            source_sha256=_text(delta, "source_sha256", required=True),
            source_length=_required_count(delta, "source_length"),
            target_path=_text(delta, "target_path", required=True, limit=1024),
            target_sha256=_text(delta, "target_sha256", required=True),
            target_length=_required_count(delta, "target_length"),
            format=_required_count(delta, "format"),
        )


def delta_target_name(target_path: str, source_version: str) -> str:
    """The TUF target path of the delta from `source_version` to the full target
    `target_path`: beside it, `<model>/<channel>/<version>/<filename>.from-<source>.delta`."""
    if not source_version or "/" in source_version or source_version.startswith("."):
        raise ProtocolError(f"invalid source version for a delta: {source_version!r}")
    return f"{target_path}.from-{source_version}.delta"


def is_rom_target(custom: object) -> bool:
    """True when `custom` carries a ROM build's fields (other targets may share the repo)."""
    try:
        TargetCustom.from_custom(custom)
    except ProtocolError:
        return False
    return True


def target_name(model: str, channel: str, version: str, filename: str) -> str:
    """The TUF target path of a ROM build: `<model>/<channel>/<version>/<filename>`."""
    for part in (model, channel, version, filename):
        if not part or "/" in part or part in (".", "..") or part.startswith("."):
            raise ProtocolError(f"invalid target path component: {part!r}")
    return f"{model}/{channel}/{version}/{filename}"


def _text(custom: dict[str, Any], key: str, *, required: bool = False, limit: int = 256) -> str:
    value = custom.get(key)
    if value is None and not required:
        return ""  # an optional field left out; a required one must at least be a string
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"target custom field {key!r} must be a string of at most {limit}")
    return value


def _texts(custom: dict[str, Any], key: str) -> tuple[str, ...]:
    value = custom.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"target custom field {key!r} must be a list of strings")
    return tuple(value)


def _required_count(custom: dict[str, Any], key: str) -> int:
    value = _count(custom, key)
    if value is None:
        raise ProtocolError(f"target custom field {key!r} is missing")
    return value


def _count(custom: dict[str, Any], key: str) -> int | None:
    value = custom.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ProtocolError(f"target custom field {key!r} must be a whole number >= 0")
    return value
