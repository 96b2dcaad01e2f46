"""The durable report outbox: one JSON file per report, removed only when the server acked it.

Every report gets the next sequence number of this device, strictly increasing forever: the
server ingests reports idempotently by `(device_id, seq)`, so a reused number would be
silently dropped as a duplicate. Two things on disk guard that:

- `next-seq`, the counter, written durably *before* a report with that number is written, so
  a number is never handed out twice even after its report was acknowledged and removed;
- the report files themselves (`<seq>.json`, and quarantined ones): the next number is
  max(counter, highest report number seen + 1), so a lost or damaged counter cannot go back.

A power cut at any instant loses no report that `add` returned and doubles none: files are
written with `atomic_write`, and a number whose report never became durable is simply
skipped. A report file that cannot be read is moved aside (`<seq>.json.corrupt-<unix_ns>`),
listed by `quarantined()`, and never silently lost. So is a report the server refused
outright (`set_aside`: a conflicting or far-ahead seq), so that it cannot block the others.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import durable
from wire import StatusReport

log = logging.getLogger(__name__)

COUNTER_NAME: Final = "next-seq"
_REPORT_NAME = re.compile(r"^(\d{20})\.json$")
_ASIDE_NAME = re.compile(r"^(\d{20})\.json\.(?:corrupt|refused)-\d+$|^next-seq\.corrupt-\d+$")
_SEQ_DIGITS: Final = 20


def report_name(seq: int) -> str:
    """Zero-padded, so a plain name sort is also the sequence order."""
    return f"{seq:0{_SEQ_DIGITS}d}.json"


class Outbox:
    """Reports waiting for the server's acknowledgement, in the directory `directory`."""

    def __init__(self, directory: Path, *, on_step: durable.StepHook = durable.no_step) -> None:
        self.directory = directory
        self.on_step = on_step  # test seam: see durable
        self._lock = threading.Lock()
        self._next_seq: int | None = None  # read from disk on first add

    def add(self, build: Callable[[int], StatusReport]) -> StatusReport:
        """Build the report with the next sequence number; it is durable when this returns."""
        with self._lock:
            seq = self._take_seq()
            report = build(seq)
            if report.seq != seq:
                raise ValueError(f"report built with seq {report.seq}, expected {seq}")
            self._write(self._path(seq), report.to_json(), "outbox.report")
            return report

    def pending(self, limit: int | None = None) -> list[StatusReport]:
        """Unacknowledged reports, oldest first (at most `limit` of them)."""
        with self._lock:
            reports: list[StatusReport] = []
            for seq in self._report_seqs():
                if limit is not None and len(reports) >= limit:
                    break
                report = self._read(seq)
                if report is not None:
                    reports.append(report)
            return reports

    def ack(self, seqs: Iterable[int]) -> None:
        """Remove the reports the server holds now, durably; unknown numbers are ignored."""
        with self._lock:
            removed = 0
            for seq in sorted(set(seqs)):
                if seq >= 0 and self._remove(self._path(seq)):
                    removed += 1
            if removed:
                durable.fsync_dir(self.directory)

    def set_aside(self, seq: int, why: str) -> None:
        """The server refused this report for good: keep it aside (its number stays used),
        out of the reports sent."""
        with self._lock:
            path = self._path(seq)
            if path.exists():
                aside = durable.move_aside(path, "refused")
                log.warning(
                    "outbox report %d refused by the server (%s); kept as %s", seq, why, aside
                )

    def quarantined(self) -> list[Path]:
        """Report (or counter) files that could not be read, or were refused, moved aside."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _ASIDE_NAME.match(p.name))

    def __len__(self) -> int:
        return len(self._report_seqs())

    # ------------------------------------------------------------------ sequence numbers

    def _take_seq(self) -> int:
        if self._next_seq is None:
            durable.ensure_dir(self.directory)
            durable.remove_stale_temps_in(self.directory)
            self._next_seq = self._next_seq_on_disk()
        seq = self._next_seq
        counter = json.dumps({"next_seq": seq + 1}).encode()
        self._write(self.directory / COUNTER_NAME, counter, "outbox.counter")  # before the report
        self._next_seq = seq + 1
        return seq

    def _next_seq_on_disk(self) -> int:
        seen = [_seq_in_name(p.name) for p in self.directory.iterdir()]
        highest = max((s for s in seen if s is not None), default=-1)
        return max(self._read_counter(), highest + 1)

    def _read_counter(self) -> int:
        path = self.directory / COUNTER_NAME
        try:
            data = durable.read_json(path)
            if data is None:
                return 0
            value = data.get("next_seq")
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
            raise ValueError(f"bad next_seq {value!r}")
        except ValueError as exc:
            aside = durable.move_aside(path, "corrupt")
            log.warning("outbox counter unreadable (%s); kept as %s", exc, aside.name)
            return 0

    # ------------------------------------------------------------------ files

    def _path(self, seq: int) -> Path:
        return self.directory / report_name(seq)

    def _report_seqs(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        names = (_REPORT_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in names if m)

    def _read(self, seq: int) -> StatusReport | None:
        path = self._path(seq)
        try:
            report = StatusReport.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:  # ProtocolError; float() on a bad "at" field
            self._quarantine(path, str(exc))
            return None
        if report.seq != seq:
            self._quarantine(path, f"holds seq {report.seq}")
            return None
        return report

    def _quarantine(self, path: Path, problem: str) -> None:
        aside = durable.move_aside(path, "corrupt")
        log.warning("outbox report %s is unreadable (%s); kept as %s", path.name, problem, aside)

    def _write(self, path: Path, data: bytes, tag: str) -> None:
        durable.atomic_write(path, data, on_step=self.on_step, tag=tag)

    def _remove(self, path: Path) -> bool:
        if not path.exists():
            return False
        self.on_step("outbox.ack")
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


def _seq_in_name(name: str) -> int | None:
    match = _REPORT_NAME.match(name) or _ASIDE_NAME.match(name)
    if match is None or match.group(1) is None:
        return None
    return int(match.group(1))
