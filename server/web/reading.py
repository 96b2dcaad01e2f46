"""The few reads the pages need beyond the services: the reports behind a rollout's progress
chart. Everything else comes from server/services as server/api_models models."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api_models import AuditEntry, RolloutStatus
from server.models import Device, Report
from server.web.progress import Progress, ReportPoint, WaveChange, progress_over_time
from wire.rollout import in_rollout


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def wave_changes(audit: list[AuditEntry]) -> list[WaveChange]:
    """When each wave began, from the audit trail (create, advance, complete)."""
    changes = []
    for entry in audit:
        if entry.action == "create" and entry.detail.get("waves"):
            changes.append(WaveChange(_aware(entry.at), float(entry.detail["waves"][0])))
        elif entry.action == "complete":
            changes.append(WaveChange(_aware(entry.at), 100.0))
        elif entry.action == "advance" and "wave" in entry.detail:
            changes.append(WaveChange(_aware(entry.at), float(entry.detail["wave"])))
    return changes


def rollout_progress(session: Session, status: RolloutStatus, now: datetime) -> Progress:
    """The rollout's devices (its channel and model) and their reports about its version."""
    fleet = session.scalars(
        select(Device.device_id).where(
            Device.channel == status.channel, Device.model == status.model
        )
    ).all()
    rows = session.execute(
        select(Report.device_id, Report.received_at, Report.state)
        .join(Device, Device.device_id == Report.device_id)
        .where(
            Report.target_version == status.version,
            Device.channel == status.channel,
            Device.model == status.model,
        )
    ).all()
    reports = [ReportPoint(r.device_id, _aware(r.received_at), r.state) for r in rows]
    notified = _notified(tuple(fleet), status.rollout_id)
    return progress_over_time(reports, wave_changes(status.audit), notified, now)


def _notified(fleet: tuple[str, ...], rollout_id: str) -> Callable[[float], int]:
    @cache
    def count(percentage: float) -> int:
        return sum(in_rollout(d, rollout_id, percentage) for d in fleet)

    return count
