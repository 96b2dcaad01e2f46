"""Status reports: parsed whole or refused whole, stored once per (device_id, seq).

HTTP and MQTT deliver the same reports, often both, sometimes twice each; the unique
constraint plus INSERT ... ON CONFLICT DO NOTHING makes every copy after the first a no-op,
also between concurrent transactions on PostgreSQL. A *different* report under a stored
number is a conflict (409), and a number far beyond the device's last one is refused (422):
stored, it would become a high-water mark that no later report could pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.api_models import Report as ReportView
from server.errors import ConflictError, InvalidInputError, UnknownDeviceError
from server.metrics import process_metrics
from server.models import Device, Report, utcnow
from server.services.views import as_object, each_view, finite_or_zero
from wire import PROTOCOL_VERSION, ProtocolError, ReportsAck, StatusReport
from wire.bounds import MAX_SEQ_AHEAD

Via = Literal["http", "mqtt"]


def parse_reports(payload: Any, device_id: str, max_batch: int) -> list[StatusReport]:
    """Every report of a batch, or InvalidInputError naming the first bad one."""
    if not isinstance(payload, list):
        raise InvalidInputError("the body must be a JSON list of status reports")
    if len(payload) > max_batch:
        raise InvalidInputError(f"at most {max_batch} reports per request, got {len(payload)}")
    reports = []
    for index, item in enumerate(payload):
        if not isinstance(item, dict):
            raise InvalidInputError(f"report {index}: not a JSON object")
        if item.get("v") != PROTOCOL_VERSION:
            raise InvalidInputError(
                f"report {index}: unsupported protocol version {item.get('v')!r}"
            )
        try:
            report = StatusReport.from_dict(item)
        except ProtocolError as exc:
            raise InvalidInputError(f"report {index}: {exc}") from None
        if report.device_id != device_id:
            raise InvalidInputError(
                f"report {index} is from device {report.device_id!r}, not {device_id!r}"
            )
        reports.append(report)
    return reports


def ingest_reports(
    session: Session, device_id: str, reports: Sequence[StatusReport], via: Via
) -> ReportsAck:
    """Store what is new, update the device from the newest report, ack every seq held."""
    if any(r.device_id != device_id for r in reports):
        raise InvalidInputError(f"every report must be from device {device_id!r}")
    device = session.get(Device, device_id)
    if device is None:
        raise UnknownDeviceError(f"no device {device_id!r} has enrolled")
    unique = _one_per_seq(reports)
    _refuse_far_ahead(unique, device.last_seq)
    _refuse_conflicts(session, device_id, unique)
    if unique:
        now = utcnow()
        session.execute(_insert_ignoring_duplicates(session, unique, via, now))
        _update_device(session, max(unique, key=lambda r: r.seq), now)
    session.commit()
    process_metrics().reports_ingested.labels(via).inc(len(unique))
    return ReportsAck(acked=tuple(sorted(r.seq for r in unique)))


def _one_per_seq(reports: Sequence[StatusReport]) -> list[StatusReport]:
    """Each seq once; the same report twice is one, two different reports are a conflict."""
    by_seq: dict[int, StatusReport] = {}
    for report in reports:
        if by_seq.setdefault(report.seq, report) != report:
            raise ConflictError(f"two different reports with seq {report.seq} in one batch")
    return list(by_seq.values())


def _refuse_far_ahead(reports: Sequence[StatusReport], last_seq: int | None) -> None:
    highest_allowed = (-1 if last_seq is None else last_seq) + MAX_SEQ_AHEAD
    for report in reports:
        if report.seq > highest_allowed:
            raise InvalidInputError(
                f"seq {report.seq} is more than {MAX_SEQ_AHEAD} past the device's last report"
                f" ({last_seq}); refused so that it cannot become the device's latest"
            )


def _refuse_conflicts(session: Session, device_id: str, reports: Sequence[StatusReport]) -> None:
    """409 when a stored report under one of these numbers says something else."""
    wanted = {r.seq: r for r in reports}
    for chunk in _chunks(sorted(wanted), 500):
        stored = session.scalars(
            select(Report).where(Report.device_id == device_id, Report.seq.in_(chunk))
        )
        for row in stored:
            if not _same_report(row, wanted[row.seq]):
                raise ConflictError(
                    f"seq {row.seq} already holds a different report of device {device_id!r}"
                )


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _same_report(row: Report, report: StatusReport) -> bool:
    return (
        row.state,
        row.current_version,
        row.target_version,
        row.slot,
        row.reason,
        row.detail,
        row.device_at,
    ) == (
        report.state.value,
        report.current_version,
        report.target_version,
        report.slot,
        report.reason.value,
        report.detail,
        report.at,
    )


def _insert_ignoring_duplicates(
    session: Session, reports: Sequence[StatusReport], via: Via, now: datetime
) -> Insert:
    rows = [
        {
            "device_id": r.device_id,
            "seq": r.seq,
            "state": r.state.value,
            "current_version": r.current_version,
            "target_version": r.target_version,
            "slot": r.slot,
            "reason": r.reason.value,
            "detail": r.detail,
            "device_at": r.at,
            "received_at": now,
            "via": via,
        }
        for r in reports
    ]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return (
            postgresql.insert(Report)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        )
    if dialect == "sqlite":
        return (
            sqlite.insert(Report)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        )
    raise NotImplementedError(f"idempotent report ingestion is not written for {dialect}")


def _update_device(session: Session, newest: StatusReport, now: datetime) -> None:
    """One conditional UPDATE, so concurrent batches cannot move a device backwards."""
    session.execute(
        update(Device)
        .where(Device.device_id == newest.device_id)
        .where(or_(Device.last_seq.is_(None), Device.last_seq < newest.seq))
        .values(
            last_seq=newest.seq,
            state=newest.state.value,
            current_version=newest.current_version,
            target_version=newest.target_version,
            slot=newest.slot,
            reason=newest.reason.value,
        )
    )
    session.execute(
        update(Device)
        .where(Device.device_id == newest.device_id)
        .values(last_report_at=now, last_seen=now)
    )


def report_view(row: Report) -> ReportView:
    return ReportView(
        device_id=row.device_id,
        seq=row.seq,
        state=row.state,
        current_version=row.current_version,
        target_version=row.target_version,
        slot=row.slot,
        reason=row.reason,
        detail=as_object(row.detail),
        at=finite_or_zero(row.device_at),
        received_at=row.received_at,
        via=row.via,
    )


def list_reports(session: Session, device_id: str | None, limit: int) -> list[ReportView]:
    """Newest first (by arrival)."""
    query = select(Report).order_by(Report.id.desc()).limit(limit)
    if device_id is not None:
        query = query.where(Report.device_id == device_id)
    return each_view(session.scalars(query), report_view, "report")
