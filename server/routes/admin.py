"""The release engineer's API: releases, rollouts and commands (release engineers), the
fleet, releases and reports (viewers too). Admin passes every check (`server.auth`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from server.auth import Principal, Role, require_role
from server.deps import SessionDep, StateDep
from server.schemas import CommandIn, ReleaseIn
from server.services.commands import command_to_dict, queue_command
from server.services.devices import list_devices
from server.services.releases import list_releases, register_release
from server.services.reports import list_reports
from wire import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["admin"])

ReleaseEngineer = Annotated[Principal, Depends(require_role(Role.RELEASE_ENGINEER))]
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER, Role.RELEASE_ENGINEER))]

MAX_REPORTS_LISTED = 10_000


@router.post("/releases", status_code=201)
def post_release(
    body: ReleaseIn, session: SessionDep, state: StateDep, _: ReleaseEngineer
) -> dict[str, Any]:
    registered = register_release(session, body)
    state.publisher.publish_notice(registered.notice)
    return registered.release


@router.get("/releases")
def get_releases(session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    return list_releases(session)


@router.get("/devices")
def get_devices(session: SessionDep, state: StateDep, _: Viewer) -> list[dict[str, Any]]:
    return list_devices(session, state.settings.report_timeout_s)


@router.post("/devices/{device_id}/commands", status_code=201)
def post_command(
    device_id: str,
    body: CommandIn,
    session: SessionDep,
    state: StateDep,
    _: ReleaseEngineer,
) -> dict[str, Any]:
    command = queue_command(session, device_id, body)
    state.publisher.publish_command(device_id, command)
    return command_to_dict(command, device_id)


@router.get("/reports")
def get_reports(
    session: SessionDep,
    _: Viewer,
    device_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_REPORTS_LISTED)] = 100,
) -> list[dict[str, Any]]:
    return list_reports(session, device_id, limit)
