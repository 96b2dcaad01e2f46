"""The release engineer's API: releases, rollouts and commands (release engineers), the
fleet, releases and reports (viewers too). Admin passes every check (`server.auth`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from server.api_models import Device, QueuedCommand, Release, Report
from server.auth import Principal, Role, require_role
from server.deps import SessionDep, StateDep
from server.input_bounds import NameInPath, NameInQuery
from server.schemas import CommandIn, ReleaseIn
from server.services.commands import queue_command, queued_view
from server.services.devices import list_devices
from server.services.releases import list_releases, register_release
from server.services.reports import list_reports
from server.services.staleness import trust_check
from wire.paths import DEVICES_PATH, RELEASES_PATH, REPORTS_PATH, commands_path

router = APIRouter(tags=["admin"])

ReleaseEngineer = Annotated[Principal, Depends(require_role(Role.RELEASE_ENGINEER))]
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER, Role.RELEASE_ENGINEER))]

MAX_REPORTS_LISTED = 10_000


@router.post(RELEASES_PATH, status_code=201, response_model=Release)
def post_release(
    body: ReleaseIn, session: SessionDep, state: StateDep, _: ReleaseEngineer
) -> Release:
    registered = register_release(session, body)
    state.publisher.publish_notice(registered.notice)
    return registered.release


@router.get(RELEASES_PATH, response_model=list[Release])
def get_releases(session: SessionDep, _: Viewer) -> list[Release]:
    return list_releases(session)


@router.get(DEVICES_PATH, response_model=list[Device])
def get_devices(session: SessionDep, state: StateDep, _: Viewer) -> list[Device]:
    settings = state.settings
    trust = trust_check(settings.repo_dir, settings.stale_metadata_after_s)
    return list_devices(session, settings.report_timeout_s, trust)


@router.post(commands_path("{device_id}"), status_code=201, response_model=QueuedCommand)
def post_command(
    device_id: NameInPath,
    body: CommandIn,
    session: SessionDep,
    state: StateDep,
    _: ReleaseEngineer,
) -> QueuedCommand:
    command = queue_command(session, device_id, body)
    state.publisher.publish_command(device_id, command)
    return queued_view(command, device_id)


@router.get(REPORTS_PATH, response_model=list[Report])
def get_reports(
    session: SessionDep,
    _: Viewer,
    device_id: NameInQuery | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_REPORTS_LISTED)] = 100,
) -> list[Report]:
    return list_reports(session, device_id, limit)
