"""What devices call: enroll, poll, report. Each device only ever as itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from server.api_models import AckedCommands
from server.deps import DeviceDep, SessionDep, StateDep
from server.rate_limits import ClientAddress
from server.schemas import CommandAckIn, EnrollRequest
from server.services.commands import acknowledge_commands, poll_for_device
from server.services.devices import enroll_device
from server.services.reports import ingest_reports, parse_reports
from wire import ENROLL_PATH, command_ack_path, poll_path, reports_path

router = APIRouter(tags=["devices"])


@router.post(ENROLL_PATH)
def enroll(
    body: EnrollRequest, session: SessionDep, state: StateDep, address: ClientAddress
) -> dict[str, str]:
    state.rate_limits.hit(state.rate_limits.enroll, address, body.device_id)
    return enroll_device(session, body, state.settings.enrollment_token).to_dict()


@router.get(poll_path("{device_id}"))
def poll(device: DeviceDep, session: SessionDep) -> dict[str, Any]:
    return poll_for_device(session, device).to_dict()


@router.post(reports_path("{device_id}"))
def post_reports(
    device: DeviceDep, session: SessionDep, state: StateDep, payload: Annotated[Any, Body()]
) -> dict[str, Any]:
    reports = parse_reports(payload, device.device_id, state.settings.max_reports_per_batch)
    return ingest_reports(session, device.device_id, reports, via="http").to_dict()


@router.post(command_ack_path("{device_id}"), response_model=AckedCommands)
def post_command_ack(body: CommandAckIn, device: DeviceDep, session: SessionDep) -> AckedCommands:
    """The device stored or handled these commands: no poll hands them out again."""
    return acknowledge_commands(session, device.device_id, body.command_ids)
