"""`GET /metrics` in Prometheus' text format (prometheus-client).

Two kinds of numbers:
- the process's counters and histograms (`process_metrics()`, made once on first use):
  request latencies by route template, reports ingested and refused (by reason), background
  worker ticks and errors;
- the fleet's gauges, computed at scrape time by `FleetCollector` with a fixed number of
  grouped queries (devices by state, version, channel and model; each live rollout's wave and
  gate numbers against their thresholds) and the TUF metadata's expiry per role, read from
  the repository's files. A scrape costs the same however many requests came before it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.models import Device, Release, Rollout, RolloutPlan
from server.services.rollout_rules import RolloutState

LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GATE_THRESHOLDS: Final = {
    "success_rate": "min_success_rate",
    "rollback_rate": "max_rollback_rate",
    "finished": "min_devices",
    "soaked_s": "min_soak_s",
    "blocking_issues": "max_blocking_issues",
}
LIVE_ROLLOUTS: Final = (RolloutState.ACTIVE.value, RolloutState.PAUSED.value)
VERSIONED_NAME: Final = re.compile(r"^(?:\d+\.)?(?P<role>.+)\.json$")


@dataclass(frozen=True)
class ProcessMetrics:
    registry: CollectorRegistry
    request_seconds: Histogram
    reports_ingested: Counter
    reports_refused: Counter
    worker_ticks: Counter
    worker_errors: Counter

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(method, route, str(status)).observe(seconds)

    def report_refused(self, via: str, reason: str) -> None:
        self.reports_refused.labels(via, reason).inc()

    def worker_ticked(self, worker: str) -> None:
        self.worker_ticks.labels(worker).inc()

    def worker_failed(self, worker: str) -> None:
        self.worker_errors.labels(worker).inc()


@cache
def process_metrics() -> ProcessMetrics:
    """This process's counters, in a registry of their own (one per process, like the
    process itself; the fleet gauges are per app)."""
    registry = CollectorRegistry(auto_describe=True)
    return ProcessMetrics(
        registry,
        Histogram(
            "ota_http_request_duration_seconds",
            "HTTP request latency by route template",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        Counter("ota_reports_ingested", "Status reports stored", ("via",), registry=registry),
        Counter(
            "ota_reports_refused",
            "Status reports refused, by reason",
            ("via", "reason"),
            registry=registry,
        ),
        Counter("ota_worker_ticks", "Background worker passes", ("worker",), registry=registry),
        Counter(
            "ota_worker_errors",
            "Background worker passes that failed",
            ("worker",),
            registry=registry,
        ),
    )


# ---------------------------------------------------------------------- scrape-time gauges


class FleetCollector(Collector):
    """The fleet's gauges, read from the database (and the TUF repository) at each scrape."""

    def __init__(self, session: Session, repo_dir: Path | None) -> None:
        self._session = session  # the scrape's own (the request's) session
        self._repo_dir = repo_dir

    def collect(self) -> Iterator[Metric]:
        yield _devices(self._session)
        yield from _rollouts(self._session)
        yield _metadata_expiry(self._repo_dir)


def _devices(session: Session) -> Metric:
    family = GaugeMetricFamily(
        "ota_devices",
        "Enrolled devices by state, running version, channel and model",
        labels=("state", "version", "channel", "model"),
    )
    rows = session.execute(
        select(
            Device.state, Device.current_version, Device.channel, Device.model, func.count()
        ).group_by(Device.state, Device.current_version, Device.channel, Device.model)
    )
    for state, version, channel, model, count in rows:
        family.add_metric([state, version, channel, model], count)
    return family


def _rollouts(session: Session) -> Iterator[Metric]:
    labels = ("rollout_id", "version", "channel", "model")
    percentage = GaugeMetricFamily(
        "ota_rollout_percentage", "The wave a live rollout is at (percent)", labels=labels
    )
    paused = GaugeMetricFamily("ota_rollout_paused", "1 when the rollout is paused", labels=labels)
    value = GaugeMetricFamily(
        "ota_rollout_gate_value", "A gate's last number", labels=(*labels, "gate")
    )
    threshold = GaugeMetricFamily(
        "ota_rollout_gate_threshold", "A gate's threshold", labels=(*labels, "gate")
    )
    counts = GaugeMetricFamily(
        "ota_rollout_devices", "Devices of a rollout by outcome", labels=(*labels, "outcome")
    )
    rows = session.execute(
        select(RolloutPlan, Rollout.percentage, Release.version, Release.channel, Release.model)
        .join(Rollout, Rollout.rollout_id == RolloutPlan.rollout_id)
        .join(Release, Release.id == Rollout.release_id)
        .where(RolloutPlan.state.in_(LIVE_ROLLOUTS))
    )
    for plan, wave, version, channel, model in rows:
        ids = [plan.rollout_id, version, channel, model]
        percentage.add_metric(ids, wave)
        paused.add_metric(ids, 1.0 if plan.state == RolloutState.PAUSED.value else 0.0)
        _gates(plan.last_numbers or {}, plan.gates or {}, ids, value, threshold)
        for outcome in ("success", "rolled_back", "failed", "in_progress", "expected"):
            if outcome in (plan.last_numbers or {}):
                counts.add_metric([*ids, outcome], float(plan.last_numbers[outcome]))
    yield from (percentage, paused, value, threshold, counts)


def _gates(
    numbers: dict[str, Any],
    gates: dict[str, Any],
    ids: list[str],
    value: GaugeMetricFamily,
    threshold: GaugeMetricFamily,
) -> None:
    for gate, setting in GATE_THRESHOLDS.items():
        if gate in numbers:
            value.add_metric([*ids, gate], float(numbers[gate]))
        if setting in gates:
            threshold.add_metric([*ids, gate], float(gates[setting]))


def _metadata_expiry(repo_dir: Path | None) -> Metric:
    family = GaugeMetricFamily(
        "ota_tuf_metadata_expiry_timestamp_seconds",
        "When the newest metadata of each TUF role expires (Unix time)",
        labels=("role",),
    )
    for role, expires in newest_expiry_by_role(repo_dir).items():
        family.add_metric([role], expires)
    return family


def newest_expiry_by_role(repo_dir: Path | None) -> dict[str, float]:
    """Role -> expiry of its highest version under `repo_dir/metadata` ({} without one)."""
    metadata = repo_dir / "metadata" if repo_dir else None
    if metadata is None or not metadata.is_dir():
        return {}
    newest: dict[str, tuple[int, float]] = {}
    for path in metadata.glob("*.json"):
        found = VERSIONED_NAME.match(path.name)
        signed = _signed(path)
        if found is None or signed is None:
            continue
        version, expires = signed
        role = found["role"]
        if role not in newest or version > newest[role][0]:
            newest[role] = (version, expires)
    return {role: expires for role, (_, expires) in newest.items()}


def _signed(path: Path) -> tuple[int, float] | None:
    """(version, expiry as Unix time) of a metadata file, or None if it cannot be read."""
    try:
        signed = json.loads(path.read_bytes())["signed"]
        expires = signed["expires"].replace("Z", "+00:00")
        return int(signed["version"]), datetime.fromisoformat(expires).timestamp()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def metrics_text(app_registry: CollectorRegistry) -> bytes:
    """The process's metrics and the app's scrape-time gauges, in the text format."""
    return generate_latest(process_metrics().registry) + generate_latest(app_registry)


def scrape_registry(session: Session, repo_dir: Path | None) -> CollectorRegistry:
    """The fleet's gauges for one scrape, read through `session`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(session, repo_dir))
    return registry
