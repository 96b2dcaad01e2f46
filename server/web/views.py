"""What the pages show, as pure functions over the services' models: fleet counts and
problems, a filtered device table, a rollout's gates against their thresholds, the week's
train calendar. No database, no HTTP: the routes feed them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from server.api_models import Device, Report, RolloutStatus, TrainStatus
from server.services.train_rules import Stage
from wire import FailureReason, UpdateState

IN_PROGRESS = frozenset(
    {
        UpdateState.DOWNLOADING.value,
        UpdateState.INSTALLED.value,
        UpdateState.REBOOTING.value,
        UpdateState.TRIAL.value,
        UpdateState.ROLLING_BACK.value,
    }
)
FAILING = frozenset({UpdateState.FAILED.value, UpdateState.ROLLED_BACK.value})
TABLE_ROWS = 200  # a filter narrows a larger fleet


# ---------------------------------------------------------------------- the fleet


def counts_by(devices: Iterable[Device], field: str) -> dict[str, int]:
    return dict(Counter(str(getattr(d, field)) for d in devices))


@dataclass(frozen=True)
class Problems:
    stuck: list[Device]
    failing: list[Device]
    offline: list[Device]
    stale: list[Device]

    def sections(self) -> list[tuple[str, str, list[Device]]]:
        """(key, heading, devices) in the order the page lists them."""
        return [
            ("stuck", "Stuck mid-update", self.stuck),
            ("failing", "Failing", self.failing),
            ("offline", "Offline", self.offline),
            ("stale", "Stale metadata", self.stale),
        ]


def find_problems(devices: Sequence[Device], now: datetime, stuck_after_s: float) -> Problems:
    """Stuck: mid-update and silent past `stuck_after_s`; failing: the last update failed or
    rolled back; offline: silent past the report timeout; stale: TUF metadata refused."""
    cutoff = now - timedelta(seconds=stuck_after_s)

    def stuck(d: Device) -> bool:
        seen = d.last_report_at or d.enrolled_at
        return d.state in IN_PROGRESS and seen < cutoff

    return Problems(
        stuck=[d for d in devices if stuck(d)],
        failing=[d for d in devices if d.state in FAILING],
        offline=[d for d in devices if d.silent],
        stale=[d for d in devices if d.reason == FailureReason.METADATA.value],
    )


@dataclass(frozen=True)
class FleetFilter:
    text: str = ""
    version: str = ""
    channel: str = ""
    model: str = ""
    state: str = ""

    def keeps(self, device: Device) -> bool:
        wanted = {
            "current_version": self.version,
            "channel": self.channel,
            "model": self.model,
            "state": self.state,
        }
        if any(value and getattr(device, key) != value for key, value in wanted.items()):
            return False
        return self.text.lower() in device.device_id.lower()


def filtered(devices: Sequence[Device], where: FleetFilter) -> tuple[list[Device], int]:
    """The first TABLE_ROWS devices the filter keeps, and how many it keeps in all."""
    kept = [d for d in devices if where.keeps(d)]
    return kept[:TABLE_ROWS], len(kept)


def versions_ran(reports: Sequence[Report]) -> list[str]:
    """The versions a device ran, oldest first, from its reports (any order)."""
    seen: dict[str, None] = {}
    for report in sorted(reports, key=lambda r: r.seq):
        seen.setdefault(report.current_version, None)
    return [v for v in seen if v]


def last_failure(reports: Sequence[Report]) -> Report | None:
    """The newest report of a failed update (its detail carries the check's output)."""
    failures = [r for r in reports if r.state in FAILING or r.reason]
    return max(failures, key=lambda r: r.seq, default=None)


# ---------------------------------------------------------------------- rollouts


@dataclass(frozen=True)
class GateRow:
    gate: str
    label: str
    value: float
    threshold: float
    passes: bool
    holding: bool  # the gate that failed or holds the rollout now
    overridden: bool


def gate_rows(status: RolloutStatus) -> list[GateRow]:
    """Each gate's last number against its threshold (nothing before the first evaluation)."""
    numbers, gates = status.numbers, status.gates
    if numbers is None:
        return []
    holding = status.paused_gate or numbers.gate
    rows = [
        ("success_rate", "Success rate, at least", numbers.success_rate, gates.min_success_rate,
         numbers.success_rate >= gates.min_success_rate),
        ("rollback_rate", "Rollback rate, at most", numbers.rollback_rate,
         gates.max_rollback_rate, numbers.rollback_rate <= gates.max_rollback_rate),
        ("min_devices", "Devices finished, at least", numbers.finished, gates.min_devices,
         numbers.finished >= min(gates.min_devices, max(numbers.expected, 1))),
        ("min_soak_s", "Soak time (s), at least", numbers.soaked_s, gates.min_soak_s,
         numbers.soaked_s >= gates.min_soak_s),
        ("blocking_issues", "Open blocking issues, at most", numbers.blocking_issues,
         gates.max_blocking_issues, numbers.blocking_issues <= gates.max_blocking_issues),
    ]  # fmt: skip
    return [
        GateRow(gate, label, value, threshold, passes, gate == holding, gate in gates.overridden)
        for gate, label, value, threshold, passes in rows
    ]


# ---------------------------------------------------------------------- the weekly train


@dataclass(frozen=True)
class TrainEvent:
    at: datetime
    stage: str
    version: str
    model: str
    reached: bool  # the build is at this stage or past it


@dataclass(frozen=True)
class CalendarDay:
    day: date
    today: bool
    events: list[TrainEvent]


STAGE_ORDER = tuple(Stage)


def week_calendar(trains: Sequence[TrainStatus], today: date) -> list[CalendarDay]:
    """Monday to Sunday of `today`'s week, each stage due that day for each build."""
    monday = today - timedelta(days=today.weekday())
    events = [
        TrainEvent(at, stage, t.version, t.model, _reached(t.stage, stage))
        for t in trains
        for stage, at in t.due.items()
    ]
    days = []
    for offset in range(7):
        day = monday + timedelta(days=offset)
        todays = sorted((e for e in events if e.at.date() == day), key=lambda e: e.at)
        days.append(CalendarDay(day, day == today, todays))
    return days


def _reached(current: Stage, stage: str) -> bool:
    try:
        return STAGE_ORDER.index(current) >= STAGE_ORDER.index(Stage(stage))
    except ValueError:
        return False
