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
        )


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


def _count(custom: dict[str, Any], key: str) -> int | None:
    value = custom.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ProtocolError(f"target custom field {key!r} must be a whole number >= 0")
    return value
