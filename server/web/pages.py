"""The dashboard's pages (GET): fleet, one device, rollouts, one rollout, the weekly train and
the testers' board. Each reads through server/services and hands the models to a template;
asked with `Accept: application/json` a page answers its live regions (server.web.render)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from server.auth import Role
from server.models import Device as DeviceRow
from server.request_scope import SessionDep, StateDep
from server.services.devices import device_view, list_devices
from server.services.feedback import surfacing
from server.services.releases import list_releases
from server.services.reports import list_reports
from server.services.rollout_rules import DEFAULT_STUCK_TIMEOUT_S, RolloutState
from server.services.rollouts import list_rollouts, rollout_status
from server.services.staleness import trust_check
from server.services.train import train_status
from server.services.train_rules import STAGE_CHANNEL
from server.web.access import AnyWebUser, Reader, ReleaseEngineer, WebRefusalError
from server.web.charts import bar_chart, line_chart
from server.web.reading import rollout_progress
from server.web.render import render
from server.web.views import (
    FleetFilter,
    counts_by,
    filtered,
    find_problems,
    gate_rows,
    last_failure,
    versions_ran,
    week_calendar,
)

router = APIRouter(tags=["dashboard"], include_in_schema=False)
Text = Annotated[str, Query(max_length=128)]
REPORTS_SHOWN = 100
ACTIONS = {
    "pause": ("Pause", "Devices that have not started stop being offered the build."),
    "resume": ("Resume", "The rollout goes on from the wave it is in."),
    "advance": ("Advance", "The next wave starts now, whatever the gates say."),
    "override": (
        "Override",
        "The gate that paused the rollout is ignored from now on; it resumes and moves on.",
    ),
}


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------- the fleet


@router.get("/fleet")
def fleet_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    user: Reader,
    q: Text = "",
    version: Text = "",
    channel: Text = "",
    model: Text = "",
    device_state: Annotated[str, Query(alias="state", max_length=32)] = "",
) -> Response:
    devices = list_devices(session, state.settings.report_timeout_s)
    where = FleetFilter(q, version, channel, model, device_state)
    shown, matching = filtered(devices, where)
    by = {field: counts_by(devices, field) for field in ("current_version", "channel", "model")}
    by_state = counts_by(devices, "state")
    context = {
        "section": "fleet",
        "total": len(devices),
        "by_version": bar_chart("Devices by version", by["current_version"]),
        "by_channel": bar_chart("Devices by channel", by["channel"]),
        "by_model": bar_chart("Devices by model", by["model"]),
        "by_state": bar_chart("Devices by state", by_state),
        "problems": find_problems(devices, _now(), DEFAULT_STUCK_TIMEOUT_S),
        "where": where,
        "selected": {"version": version, "channel": channel, "model": model, "state": device_state},
        "choices": [
            ("version", "Version", sorted(by["current_version"])),
            ("channel", "Channel", sorted(by["channel"])),
            ("model", "Model", sorted(by["model"])),
            ("state", "State", sorted(by_state)),
        ],
        "shown": shown,
        "matching": matching,
    }
    return render(request, "fleet.html", context, user=user)


@router.get("/fleet/devices/{device_id}")
def device_page(
    device_id: str, request: Request, session: SessionDep, state: StateDep, user: Reader
) -> Response:
    row = session.get(DeviceRow, device_id)
    if row is None:
        raise WebRefusalError(404, f"no device {device_id!r} has enrolled")
    reports = list_reports(session, device_id, REPORTS_SHOWN)
    context = {
        "section": "fleet",
        "device": device_view(row, _now(), state.settings.report_timeout_s),
        "reports": reports,
        "versions": versions_ran(reports),
        "failure": last_failure(reports),
    }
    return render(request, "device.html", context, user=user)


# ---------------------------------------------------------------------- rollouts


@router.get("/rollouts")
def rollouts_page(request: Request, session: SessionDep, user: Reader) -> Response:
    context = {
        "section": "rollouts",
        "rollouts": list_rollouts(session),
        "releases": list_releases(session),
    }
    return render(request, "rollouts.html", context, user=user)


def possible_actions(state: RolloutState, paused_gate: str) -> list[tuple[str, str]]:
    """The buttons that make sense for a rollout in `state`."""
    names = {
        RolloutState.ACTIVE: ["pause", "advance"],
        RolloutState.PAUSED: ["resume"] + (["override"] if paused_gate else []),
    }.get(state, [])
    return [(name, ACTIONS[name][0]) for name in names]


@router.get("/rollouts/{rollout_id}")
def rollout_page(
    rollout_id: str, request: Request, session: SessionDep, state: StateDep, user: Reader
) -> Response:
    settings = state.settings
    trust = trust_check(settings.repo_dir, settings.stale_metadata_after_s)
    status = rollout_status(session, rollout_id, trust)
    now = _now()
    progress = rollout_progress(session, status, now)
    markers = [(w.at, f"{w.percentage:g} %") for w in progress.waves]
    context = {
        "section": "rollouts",
        "rollout": status,
        "gates": gate_rows(status),
        "actions": possible_actions(status.state, status.paused_gate),
        "progress_chart": line_chart(
            "Devices of this rollout over time", progress.times, progress.series, markers
        ),
    }
    return render(request, "rollout.html", context, user=user)


@router.get("/rollouts/{rollout_id}/confirm/{action}")
def confirm_page(
    rollout_id: str, action: str, request: Request, session: SessionDep, user: ReleaseEngineer
) -> Response:
    if action not in ACTIONS:
        raise WebRefusalError(404, f"no such action {action!r}")
    label, explanation = ACTIONS[action]
    context = {
        "section": "rollouts",
        "rollout": rollout_status(session, rollout_id),
        "action": action,
        "label": label,
        "explanation": explanation,
    }
    return render(request, "confirm.html", context, user=user)


# ---------------------------------------------------------------------- the weekly train


@router.get("/train")
def train_page(request: Request, session: SessionDep, state: StateDep, user: Reader) -> Response:
    trains = train_status(session, state.settings.train)
    context = {
        "section": "train",
        "trains": trains,
        "days": week_calendar(trains, _now().date()),
        "rings": list(STAGE_CHANNEL.values()),
    }
    return render(request, "train.html", context, user=user)


# ---------------------------------------------------------------------- testers


def _builds(session: SessionDep) -> list[str]:
    """Versions with a release, newest first."""
    versions = {r.version: r.published_at for r in list_releases(session)}
    return sorted(versions, key=lambda v: (versions[v], v), reverse=True)


def _default_build(session: SessionDep, user: AnyWebUser, builds: list[str]) -> str:
    if user.role is Role.TESTER:
        device = session.get(DeviceRow, user.principal.subject)
        if device is not None and device.current_version in builds:
            return device.current_version
    return builds[0] if builds else ""


@router.get("/testers")
def board_page(
    request: Request, session: SessionDep, user: AnyWebUser, build: Text = ""
) -> Response:
    builds = _builds(session)
    build = build or _default_build(session, user, builds)
    context = {
        "section": "testers",
        "builds": builds if build in builds or not build else [build, *builds],
        "build": build,
        "board": surfacing(session, build) if build else None,
    }
    return render(request, "testers.html", context, user=user)
