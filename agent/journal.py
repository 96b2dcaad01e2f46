"""The agent's journal: one small JSON file, written atomically before every step is acted on.

A power cut at any instant leaves the old record or the new one, never a torn mix
(`durable.atomic_write`). A file that is unreadable anyway (bad flash, a hand edit, an
agent from the future with another format) is moved aside as `<name>.corrupt-<unix_ns>`, kept
for diagnosis, and `load()` answers None: the runner then recovers from the bootloader's view
of the truth, as it does on a device's first start.

Decoding is strict: every field must be there with the right type, or ValueError (except
`slot_releases`, added later: a journal from before it reads as "no counters known"). Unknown
keys are ignored, so a journal written by a newer agent (the device rolled back to a slot with
an older one) is still read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import durable
from agent.installed import InstalledRelease
from wire import FailureReason, UpdateState

log = logging.getLogger(__name__)

JOURNAL_FORMAT: Final = 1
SLOT_NAMES: Final = frozenset({"a", "b"})


@dataclass(frozen=True)
class JournalRecord:
    """Everything the runner needs to resume an update after a reboot or crash."""

    state: UpdateState = UpdateState.IDLE
    current_version: str = ""
    slot_versions: dict[str, str] = field(default_factory=dict)  # slot -> version in it
    target_path: str = ""  # TUF target path of the release being installed
    target_version: str = ""
    rollout_id: str = ""
    target_slot: str = ""  # "a" / "b" while an update is in progress
    bytes_written: int = 0  # durable progress of the slot write (for resume)
    step_attempts: int = 0  # times the current step was started (crash-loop guard)
    reason: FailureReason = FailureReason.NONE
    detail: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0  # wall clock, seconds since the epoch
    slot_releases: dict[str, InstalledRelease] = field(default_factory=dict)  # slot -> signed

    def with_slot(
        self, slot: str, version: str, release: InstalledRelease | None
    ) -> dict[str, Any]:
        """The changes that note `version` (and its signed `release`) as what `slot` holds."""
        releases = {k: v for k, v in self.slot_releases.items() if k != slot}
        if release is not None:
            releases[slot] = release
        return {"slot_versions": {**self.slot_versions, slot: version}, "slot_releases": releases}

    def without_slot(self, slot: str) -> dict[str, Any]:
        """The changes that forget what `slot` holds (its write failed or it was rolled back)."""
        return {
            "slot_versions": {k: v for k, v in self.slot_versions.items() if k != slot},
            "slot_releases": {k: v for k, v in self.slot_releases.items() if k != slot},
        }

    def replace(self, **changes: Any) -> JournalRecord:
        """A copy with `changes` applied (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> bytes:
        body = {"format": JOURNAL_FORMAT, **dataclasses.asdict(self)}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> JournalRecord:
        """Strict decode; raises ValueError (or a subclass) on anything malformed."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("journal is not a JSON object")
        if data.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"unknown journal format {data.get('format')!r}")
        return cls._from_dict(data)

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> JournalRecord:
        record = cls(
            state=UpdateState(_field(data, "state", str)),
            current_version=_field(data, "current_version", str),
            slot_versions=_slot_versions(_field(data, "slot_versions", dict)),
            target_path=_field(data, "target_path", str),
            target_version=_field(data, "target_version", str),
            rollout_id=_field(data, "rollout_id", str),
            target_slot=_field(data, "target_slot", str),
            bytes_written=_count(data, "bytes_written"),
            step_attempts=_count(data, "step_attempts"),
            reason=FailureReason(_field(data, "reason", str)),
            detail=_field(data, "detail", dict),
            updated_at=float(_field(data, "updated_at", (int, float))),
            slot_releases=_slot_releases(data.get("slot_releases", {})),
        )
        if not math.isfinite(record.updated_at):
            raise ValueError("journal field 'updated_at' is not a finite number")
        if record.target_slot not in SLOT_NAMES | {""}:
            raise ValueError(f"unknown target slot {record.target_slot!r}")
        return record


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ValueError(f"journal field {key!r} is missing")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"journal field {key!r} has the wrong type")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value: int = _field(data, key, int)
    if value < 0:
        raise ValueError(f"journal field {key!r} is negative")
    return value


def _slot_versions(raw: dict[str, Any]) -> dict[str, str]:
    for slot, version in raw.items():
        if slot not in SLOT_NAMES or not isinstance(version, str):
            raise ValueError(f"bad slot_versions entry {slot!r}: {version!r}")
    return dict(raw)


def _slot_releases(raw: object) -> dict[str, InstalledRelease]:
    if not isinstance(raw, dict) or not set(raw) <= SLOT_NAMES:
        raise ValueError(f"bad slot_releases {raw!r}")
    return {slot: InstalledRelease.from_dict(release) for slot, release in raw.items()}


class Journal:
    """The journal file at `path`. One writer (the runner) at a time."""

    def __init__(self, path: Path, *, on_step: durable.StepHook = durable.no_step) -> None:
        self.path = path
        self.on_step = on_step  # test seam: see durable
        self.recovered_from_corruption = False
        self.moved_aside: Path | None = None  # where the last corrupt file went
        self._swept = False  # stale temp files removed (by the writer, on its first save)

    def load(self) -> JournalRecord | None:
        """The last saved record; None when there is none or it was corrupt (moved aside)."""
        self.recovered_from_corruption = False
        self.moved_aside = None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return JournalRecord.from_json(raw)
        except ValueError as exc:
            self._move_aside(exc)
            return None

    def save(self, record: JournalRecord) -> None:
        """Write `record` atomically; it is durable when this returns."""
        if not self._swept:  # not in load(): `ota-agent status` loads while the agent writes
            durable.ensure_dir(self.path.parent)
            durable.remove_stale_temps(self.path)
            self._swept = True
        durable.atomic_write(self.path, record.to_json(), on_step=self.on_step, tag="journal")

    def _move_aside(self, problem: ValueError) -> None:
        self.moved_aside = durable.move_aside(self.path, "corrupt")
        self.recovered_from_corruption = True
        log.warning(
            "journal %s is unreadable (%s); kept as %s, recovering from the bootloader",
            self.path,
            problem,
            self.moved_aside.name,
        )
