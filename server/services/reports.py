"""Status reports: parsed whole or refused whole, stored once per (device_id, seq).

HTTP and MQTT deliver the same reports, often both, sometimes twice each; the unique
constraint plus INSERT ... ON CONFLICT DO NOTHING makes every copy after the first a no-op,
also between concurrent transactions on PostgreSQL. A *different* report under a stored
number is a conflict (409), and a number far beyond the device's last one is refused (422):
stored, it would become a high-water mark that no later report could pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import Connection, Table, bindparam, or_, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from server.api_models import Report as ReportView
from server.errors import ConflictError, InvalidInputError, ServiceError, UnknownDeviceError
from server.metrics import process_metrics
from server.models import Device, Report, utcnow
from server.services.views import as_object, each_view, finite_or_zero
from wire import PROTOCOL_VERSION, ProtocolError, ReportsAck, StatusReport
from wire.bounds import MAX_SEQ_AHEAD

Via = Literal["http", "mqtt"]
IN_CHUNK: Final = 500  # keys per IN (...)


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
    """Store what is new, update the device from the newest report, ack every seq held.

    The multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING says which reports are new;
    only the others are read back, to tell a duplicate (acked) from a conflict (409)."""
    if any(r.device_id != device_id for r in reports):
        raise InvalidInputError(f"every report must be from device {device_id!r}")
    last_seqs = _last_seqs(session, {device_id})
    if device_id not in last_seqs:
        raise UnknownDeviceError(f"no device {device_id!r} has enrolled")
    unique = _one_per_seq(reports)
    _refuse_far_ahead(unique, last_seqs[device_id])
    if unique:
        new = _store(session, unique, via)
        conflicts = _conflicts(session, [r for r in unique if (r.device_id, r.seq) not in new])
        if conflicts:
            session.rollback()
            raise ConflictError(
                f"seq {conflicts[0].seq} already holds a different report of device {device_id!r}"
            )
    session.commit()
    process_metrics().reports_ingested.labels(via).inc(len(unique))
    return ReportsAck(acked=tuple(sorted(r.seq for r in unique)))


@dataclass(frozen=True)
class BatchOutcome:
    """What became of a batch of many devices' reports (MQTT): how many were new, how many
    were held already, and each refused one with the reason."""

    stored: int
    duplicates: int
    refused: list[tuple[StatusReport, ServiceError]]


def ingest_report_batch(
    session: Session, reports: Sequence[StatusReport], via: Via
) -> BatchOutcome:
    """Many devices' reports in one transaction, by the rules of `ingest_reports`; but a
    report that breaks them is refused alone (returned, not raised) and the rest are stored.

    A handful of statements whatever the batch size: the devices' last numbers, multi-row
    INSERTs ... ON CONFLICT DO NOTHING, one executemany UPDATE for the newest report of each
    device. The caller commits, so that it acknowledges the batch only after the commit."""
    refused: list[tuple[StatusReport, ServiceError]] = []
    by_key: dict[tuple[str, int], StatusReport] = {}
    for report in reports:
        if by_key.setdefault((report.device_id, report.seq), report) != report:
            refused.append((report, ConflictError(f"two different reports with seq {report.seq}")))
    last_seqs = _last_seqs(session, {device_id for device_id, _ in by_key})
    accepted: list[StatusReport] = []
    for report in by_key.values():
        if report.device_id not in last_seqs:
            unknown = UnknownDeviceError(f"no device {report.device_id!r} has enrolled")
            refused.append((report, unknown))
            continue
        try:
            _refuse_far_ahead([report], last_seqs[report.device_id])
        except InvalidInputError as exc:
            refused.append((report, exc))
            continue
        accepted.append(report)
    new = _store(session, accepted, via) if accepted else set()
    old = [r for r in accepted if (r.device_id, r.seq) not in new]
    conflicts = _conflicts(session, old)
    for report in conflicts:
        refused.append((report, ConflictError(f"seq {report.seq} holds a different report")))
    process_metrics().reports_ingested.labels(via).inc(len(new))
    return BatchOutcome(stored=len(new), duplicates=len(old) - len(conflicts), refused=refused)


def _last_seqs(session: Session, device_ids: set[str]) -> dict[str, int | None]:
    """Each enrolled device's last report number (None before its first); absent: unknown."""
    found: dict[str, int | None] = {}
    ordered = sorted(device_ids)
    if session.get_bind().dialect.name == "postgresql":  # one array, not 500 placeholders
        for device_id, last_seq in session.execute(_PG_LAST_SEQS, {"device_id": ordered}):
            found[device_id] = last_seq
        return found
    for start in range(0, len(ordered), IN_CHUNK):
        chunk = ordered[start : start + IN_CHUNK]
        rows = session.execute(
            select(Device.device_id, Device.last_seq).where(Device.device_id.in_(chunk))
        )
        for device_id, last_seq in rows:
            found[device_id] = last_seq
    return found


_PG_LAST_SEQS = text(
    "SELECT device_id, last_seq FROM devices WHERE device_id = ANY(CAST(:device_id AS text[]))"
)


def _store(session: Session, reports: Sequence[StatusReport], via: Via) -> set[tuple[str, int]]:
    """Insert what is new (a duplicate is a no-op), move each device to its newest report;
    returns the (device_id, seq) of the rows this call inserted."""
    now = utcnow()
    connection = session.connection()  # Core, not the ORM's bulk path (3x the CPU per row)
    newest = _newest_per_device(reports)
    if connection.dialect.name == "postgresql":
        new = {(d, s) for d, s in connection.execute(_PG_INSERT, _pg_columns(reports, via, now))}
        devices = _pg_device_columns(list(newest.values()), now)
        connection.execute(_PG_UPDATE, devices)
        connection.execute(_PG_HEARD, {"now": now, "device_id": devices["device_id"]})
        return new
    rows = connection.execute(
        _insert_ignoring_duplicates(connection.dialect.name), _rows(reports, via, now)
    )
    new = {(device_id, seq) for device_id, seq in rows}
    _update_devices(connection, newest, now)
    return new


# PostgreSQL: a whole batch as one short statement over arrays (unnest). A multi-row VALUES of
# a thousand rows is 11,000 placeholders that psycopg parses anew every time (100 ms a page
# here, 1,000 reports/s); arrays keep the statement the same, so it is parsed once.
_PG_INSERT = text(
    "INSERT INTO reports (device_id, seq, state, current_version, target_version, slot,"
    " reason, detail, device_at, received_at, via)"
    " SELECT d, s, st, cv, tv, sl, r, CAST(dt AS json), a, :now, :via FROM unnest("
    "CAST(:device_id AS text[]), CAST(:seq AS bigint[]), CAST(:state AS text[]),"
    " CAST(:current_version AS text[]), CAST(:target_version AS text[]), CAST(:slot AS text[]),"
    " CAST(:reason AS text[]), CAST(:detail AS text[]), CAST(:device_at AS float8[]))"
    " AS n(d, s, st, cv, tv, sl, r, dt, a)"
    " ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq"
)
# Each device to its newest report, never backwards (a concurrent batch may hold a newer one).
_PG_UPDATE = text(
    "UPDATE devices SET last_seq = n.s, state = n.st, current_version = n.cv,"
    " target_version = n.tv, slot = n.sl, reason = n.r"
    " FROM unnest(CAST(:device_id AS text[]), CAST(:seq AS bigint[]), CAST(:state AS text[]),"
    " CAST(:current_version AS text[]), CAST(:target_version AS text[]), CAST(:slot AS text[]),"
    " CAST(:reason AS text[])) AS n(d, s, st, cv, tv, sl, r)"
    " WHERE devices.device_id = n.d AND (devices.last_seq IS NULL OR devices.last_seq < n.s)"
)
_PG_HEARD = text(
    "UPDATE devices SET last_report_at = :now, last_seen = :now"
    " WHERE device_id = ANY(CAST(:device_id AS text[]))"
)


def _pg_device_columns(reports: Sequence[StatusReport], now: datetime) -> dict[str, Any]:
    return {
        "now": now,
        "device_id": [r.device_id for r in reports],
        "seq": [r.seq for r in reports],
        "state": [r.state.value for r in reports],
        "current_version": [r.current_version for r in reports],
        "target_version": [r.target_version for r in reports],
        "slot": [r.slot for r in reports],
        "reason": [r.reason.value for r in reports],
    }


def _pg_columns(reports: Sequence[StatusReport], via: Via, now: datetime) -> dict[str, Any]:
    return {
        **_pg_device_columns(reports, now),
        "via": via,
        "detail": [json.dumps(r.detail) for r in reports],
        "device_at": [r.at for r in reports],
    }


def _newest_per_device(reports: Sequence[StatusReport]) -> dict[str, StatusReport]:
    newest: dict[str, StatusReport] = {}
    for report in reports:
        held = newest.get(report.device_id)
        if held is None or held.seq < report.seq:
            newest[report.device_id] = report
    return newest


def _conflicts(session: Session, reports: Sequence[StatusReport]) -> list[StatusReport]:
    """Those of `reports` (each held already under its number) whose stored row differs."""
    wanted = {(r.device_id, r.seq): r for r in reports}
    keys = sorted(wanted)
    different: list[StatusReport] = []
    for start in range(0, len(keys), IN_CHUNK):
        chunk = keys[start : start + IN_CHUNK]
        stored = session.execute(
            select(
                Report.device_id,
                Report.seq,
                Report.state,
                Report.current_version,
                Report.target_version,
                Report.slot,
                Report.reason,
                Report.detail,
                Report.device_at,
            ).where(tuple_(Report.device_id, Report.seq).in_(chunk))
        )
        for device_id, seq, *fields in stored:
            report = wanted[(device_id, seq)]
            if tuple(fields) != _fields(report):
                different.append(report)
    return different


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


def _fields(report: StatusReport) -> tuple[Any, ...]:
    """What a stored row holds of a report, in `_conflicts`' column order."""
    return (
        report.state.value,
        report.current_version,
        report.target_version,
        report.slot,
        report.reason.value,
        report.detail,
        report.at,
    )


def _rows(reports: Sequence[StatusReport], via: Via, now: datetime) -> list[dict[str, Any]]:
    return [
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


def _insert_ignoring_duplicates(dialect: str) -> ReturningInsert[str, int]:
    """One statement for every batch (compiled once, cached): executed with many rows,
    SQLAlchemy sends them as multi-row VALUES pages ("insertmanyvalues") and gathers what
    RETURNING says was new."""
    reports = _table(Report)
    if dialect == "postgresql":
        return (
            postgresql.insert(reports)
            .on_conflict_do_nothing(index_elements=["device_id", "seq"])
            .returning(reports.c.device_id, reports.c.seq)
        )
    if dialect == "sqlite":
        return (
            sqlite.insert(reports)
            .on_conflict_do_nothing(index_elements=["device_id", "seq"])
            .returning(reports.c.device_id, reports.c.seq)
        )
    raise NotImplementedError(f"idempotent report ingestion is not written for {dialect}")


def _table(model: type[Report] | type[Device]) -> Table:
    return Report.metadata.tables[model.__tablename__]


def _update_devices(connection: Connection, newest: dict[str, StatusReport], now: datetime) -> None:
    """Each device to its newest report with one conditional UPDATE (executemany), so that
    concurrent batches cannot move a device backwards; and each device heard from now."""
    devices = _table(Device)
    connection.execute(
        update(devices)
        .where(devices.c.device_id == bindparam("b_device_id"))
        .where(or_(devices.c.last_seq.is_(None), devices.c.last_seq < bindparam("b_seq")))
        .values(
            last_seq=bindparam("b_seq"),
            state=bindparam("b_state"),
            current_version=bindparam("b_current_version"),
            target_version=bindparam("b_target_version"),
            slot=bindparam("b_slot"),
            reason=bindparam("b_reason"),
        ),
        [
            {
                "b_device_id": r.device_id,
                "b_seq": r.seq,
                "b_state": r.state.value,
                "b_current_version": r.current_version,
                "b_target_version": r.target_version,
                "b_slot": r.slot,
                "b_reason": r.reason.value,
            }
            for r in newest.values()
        ],
    )
    connection.execute(
        update(devices)
        .where(devices.c.device_id == bindparam("b_device_id"))
        .values(last_report_at=now, last_seen=now),
        [{"b_device_id": device_id} for device_id in newest],
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
