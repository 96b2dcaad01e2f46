"""What devices call: enroll, prove their key for an access token, poll, report. Each device
only ever as itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header

from server.api_models import AckedCommands, BrokerSecret, Challenge, DeviceAccess, Enrolled
from server.deps import DeviceDep, SessionDep, StateDep
from server.errors import InvalidInputError
from server.input_bounds import NameInPath
from server.rate_limits import ClientAddress
from server.schemas import CommandAckIn, EnrollRequest, SignedChallenge
from server.services.commands import acknowledge_commands, poll_for_device
from server.services.device_keys import issue_challenge, sign_in
from server.services.enrollment import EnrollmentPolicy, enroll_device, reissue_broker_secret
from server.services.reports import ingest_reports, parse_reports
from server.settings import Settings, server_broker_user
from wire import (
    ENROLL_PATH,
    TRUSTED_TIMESTAMP_HEADER,
    ProtocolError,
    TrustedTimestamp,
    broker_secret_path,
    challenge_path,
    command_ack_path,
    device_token_path,
    poll_path,
    reports_path,
)
from wire.messages import MAX_TRUSTED_HEADER_CHARS

router = APIRouter(tags=["devices"])


def enrollment_policy(settings: Settings) -> EnrollmentPolicy:
    reserved = {server_broker_user(settings)} - {""}
    return EnrollmentPolicy(
        fleet_token=settings.enrollment_token,
        token_ttl_s=settings.device_token_ttl_s,
        reserved_ids=frozenset(reserved),
    )


@router.post(ENROLL_PATH, response_model=Enrolled)
def enroll(
    body: EnrollRequest, session: SessionDep, state: StateDep, address: ClientAddress
) -> Enrolled:
    state.rate_limits.hit(state.rate_limits.enroll, address, body.device_id)
    return enroll_device(session, body, enrollment_policy(state.settings))


@router.get(challenge_path("{device_id}"), response_model=Challenge)
def get_challenge(device_id: NameInPath, session: SessionDep, state: StateDep) -> Challenge:
    return issue_challenge(session, device_id, state.settings.challenge_ttl_s)


@router.post(device_token_path("{device_id}"), response_model=DeviceAccess)
def post_token(
    device_id: NameInPath, body: SignedChallenge, session: SessionDep, state: StateDep
) -> DeviceAccess:
    ttl_s = state.settings.device_token_ttl_s
    return sign_in(session, device_id, body.nonce, body.signature, ttl_s)


@router.post(broker_secret_path("{device_id}"), response_model=BrokerSecret)
def post_broker_secret(device: DeviceDep, session: SessionDep) -> BrokerSecret:
    return reissue_broker_secret(session, device.device_id)


@router.get(poll_path("{device_id}"))
def poll(
    device: DeviceDep,
    session: SessionDep,
    trusted_timestamp: Annotated[
        str | None,
        Header(alias=TRUSTED_TIMESTAMP_HEADER, max_length=MAX_TRUSTED_HEADER_CHARS),
    ] = None,
) -> dict[str, Any]:
    """What the device should run; its `X-OTA-Trusted-Timestamp` (optional: older agents
    send none) says which TUF timestamp it trusts, for the staleness view."""
    trusted = None
    if trusted_timestamp is not None:
        try:
            trusted = TrustedTimestamp.from_header(trusted_timestamp)
        except ProtocolError as exc:
            raise InvalidInputError(str(exc)) from None
    return poll_for_device(session, device, trusted).to_dict()


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
