"""Commands for one device: stored, published as a doorbell, handed out by every poll until
the device acknowledges them (so a poll answer lost on the way loses no command)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.api_models import AckedCommands, QueuedCommand
from server.errors import UnknownDeviceError
from server.models import Device, DeviceCommand, utcnow
from server.schemas import CommandIn
from server.services.releases import current_notice
from wire import Command, CommandKind, PollAnswer, TrustedTimestamp
from wire.messages import MAX_COMMANDS_PER_POLL

log = logging.getLogger(__name__)

PENDING = "pending"
DELIVERED = "delivered"


def queue_command(session: Session, device_id: str, body: CommandIn) -> Command:
    if session.get(Device, device_id) is None:
        raise UnknownDeviceError(f"no device {device_id!r} has enrolled")
    row = DeviceCommand(
        command_id=uuid.uuid4().hex,
        device_id=device_id,
        kind=body.kind.value,
        args=body.args,
        status=PENDING,
        created_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return Command(command_id=row.command_id, kind=body.kind, args=body.args)


def _to_command(row: DeviceCommand) -> Command | None:
    """None for a stored kind this server no longer knows: skipped, never a failed poll."""
    try:
        kind = CommandKind(row.kind)
    except ValueError:
        log.warning("command %s has an unknown kind %r; not handed out", row.command_id, row.kind)
        return None
    args = row.args if isinstance(row.args, dict) else {}
    return Command(command_id=row.command_id, kind=kind, args=args)


def pending_commands(session: Session, device_id: str) -> list[Command]:
    """Commands the device has not acknowledged yet, oldest first."""
    rows = session.scalars(
        select(DeviceCommand)
        .where(DeviceCommand.device_id == device_id, DeviceCommand.status == PENDING)
        .order_by(DeviceCommand.created_at, DeviceCommand.command_id)
        .limit(MAX_COMMANDS_PER_POLL)
    ).all()
    return [c for c in map(_to_command, rows) if c is not None]


def acknowledge_commands(
    session: Session, device_id: str, command_ids: Sequence[str]
) -> AckedCommands:
    """Mark the device's own commands among `command_ids` delivered; others are ignored."""
    known = list(
        session.scalars(
            select(DeviceCommand.command_id).where(
                DeviceCommand.device_id == device_id, DeviceCommand.command_id.in_(command_ids)
            )
        )
    )
    session.execute(
        update(DeviceCommand)
        .where(DeviceCommand.command_id.in_(known), DeviceCommand.status == PENDING)
        .values(status=DELIVERED, delivered_at=utcnow())
    )
    session.commit()
    return AckedCommands(acked=sorted(known))


def poll_for_device(
    session: Session, device: Device, trusted: TrustedTimestamp | None = None
) -> PollAnswer:
    """What an authenticated device should run now; records that it was seen, and the TUF
    timestamp it trusts when it says (server.services.staleness)."""
    notice = current_notice(session, device.channel, device.model)
    commands = pending_commands(session, device.device_id)
    device.last_seen = now = utcnow()
    if trusted is not None:
        device.trusted_ts_version = trusted.version
        device.trusted_ts_expires = datetime.fromtimestamp(trusted.expires, UTC)
        device.trusted_ts_at = now
    session.commit()
    return PollAnswer(notice=notice, commands=tuple(commands))


def queued_view(command: Command, device_id: str) -> QueuedCommand:
    return QueuedCommand(
        device_id=device_id, command_id=command.command_id, kind=command.kind, args=command.args
    )
