"""A rollout's progress over time, as a pure sweep over the reports of its devices: at each
sample time, how many devices the wave had notified and how many were downloading, installed,
committed or rolled back (each device counted in the state of its newest report by then)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from wire import UpdateState

NOTIFIED = "notified"
SERIES = (NOTIFIED, "downloading", "installed", "committed", "rolled back")
CATEGORY: dict[str, str] = {
    UpdateState.DOWNLOADING.value: "downloading",
    UpdateState.INSTALLED.value: "installed",
    UpdateState.REBOOTING.value: "installed",
    UpdateState.TRIAL.value: "installed",
    UpdateState.COMMITTED.value: "committed",
    UpdateState.ROLLING_BACK.value: "rolled back",
    UpdateState.ROLLED_BACK.value: "rolled back",
}
SAMPLES = 48


@dataclass(frozen=True)
class ReportPoint:
    device_id: str
    at: datetime  # when the server received it
    state: str


@dataclass(frozen=True)
class WaveChange:
    at: datetime
    percentage: float


@dataclass(frozen=True)
class Progress:
    times: tuple[datetime, ...]
    series: dict[str, list[int]]
    waves: tuple[WaveChange, ...]


def sample_times(start: datetime, end: datetime, samples: int = SAMPLES) -> tuple[datetime, ...]:
    if end <= start:
        return (start,)
    step = (end - start) / (samples - 1)
    return tuple(start + step * index for index in range(samples))


def wave_at(waves: Sequence[WaveChange], moment: datetime) -> float:
    """The percentage in force at `moment` (waves in time order; 0 before the first)."""
    current = 0.0
    for change in waves:
        if change.at > moment:
            break
        current = change.percentage
    return current


def progress_over_time(
    reports: Sequence[ReportPoint],
    waves: Sequence[WaveChange],
    notified_at: Callable[[float], int],
    now: datetime,
) -> Progress:
    """The series of SERIES from the first wave until `now`; `notified_at(percentage)` counts
    the devices a wave of that size reaches (the devices' own bucket function)."""
    start = waves[0].at if waves else now
    times = sample_times(start, max(now, start))
    ordered = sorted(reports, key=lambda r: r.at)
    latest: dict[str, str] = {}
    tally: Counter[str] = Counter()
    series: dict[str, list[int]] = {name: [] for name in SERIES}
    position = 0
    for moment in times:
        while position < len(ordered) and ordered[position].at <= moment:
            _apply(ordered[position], latest, tally)
            position += 1
        series[NOTIFIED].append(notified_at(wave_at(waves, moment)))
        for name in SERIES[1:]:
            series[name].append(tally[name])
    return Progress(times, series, tuple(waves))


def _apply(report: ReportPoint, latest: dict[str, str], tally: Counter[str]) -> None:
    before = latest.get(report.device_id)
    if before is not None:
        tally[before] -= 1
    latest[report.device_id] = CATEGORY.get(report.state, "other")
    tally[latest[report.device_id]] += 1
