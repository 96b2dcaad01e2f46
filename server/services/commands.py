"""Commands for one device: stored, published as a doorbell, handed out by the next poll."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api_models import QueuedCommand
from server.errors import UnknownDeviceError
from server.models import Device, DeviceCommand, utcnow
from server.schemas import CommandIn
from server.services.releases import current_notice
from wire import Command, CommandKind, PollAnswer

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
    return _to_command(row)


def _to_command(row: DeviceCommand) -> Command:
    return Command(command_id=row.command_id, kind=CommandKind(row.kind), args=row.args)


def take_pending_commands(session: Session, device_id: str) -> list[Command]:
    """Pending commands, oldest first, marked delivered (the caller commits)."""
    rows = session.scalars(
        select(DeviceCommand)
        .where(DeviceCommand.device_id == device_id, DeviceCommand.status == PENDING)
        .order_by(DeviceCommand.created_at, DeviceCommand.command_id)
    ).all()
    now = utcnow()
    for row in rows:
        row.status = DELIVERED
        row.delivered_at = now
    return [_to_command(r) for r in rows]


def poll_for_device(session: Session, device: Device) -> PollAnswer:
    """What an authenticated device should run now; records that it was seen."""
    notice = current_notice(session, device.channel, device.model)
    commands = take_pending_commands(session, device.device_id)
    device.last_seen = utcnow()
    session.commit()
    return PollAnswer(notice=notice, commands=tuple(commands))


def queued_view(command: Command, device_id: str) -> QueuedCommand:
    return QueuedCommand(
        device_id=device_id, command_id=command.command_id, kind=command.kind, args=command.args
    )
