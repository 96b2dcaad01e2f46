"""A tiny read-only dashboard: the fleet as the server sees it, and the releases.

It shows the fleet, so it takes a viewer's (or release engineer's, or admin's) token, from the
Authorization header or `?token=` (a browser cannot easily send a header)."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from server.api_models import Device, Release
from server.auth import Principal, Role, require_role_or_query_token
from server.deps import SessionDep, StateDep
from server.services.devices import list_devices
from server.services.releases import list_releases

router = APIRouter(tags=["dashboard"])

Viewer = Annotated[
    Principal, Depends(require_role_or_query_token(Role.VIEWER, Role.RELEASE_ENGINEER))
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Orange Friday</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
h1 {{ color: #e8590c; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }}
.committed {{ color: #2b8a3e; }} .rolled_back {{ color: #e67700; }} .failed {{ color: #c92a2a; }}
</style></head>
<body><h1>Orange Friday</h1>
<h2>Devices ({device_count})</h2>
<table><tr><th>device</th><th>model</th><th>channel</th><th>version</th><th>slot</th>
<th>state</th><th>reason</th><th>last report</th></tr>
{device_rows}</table>
<h2>Releases ({release_count})</h2>
<table><tr><th>channel</th><th>model</th><th>version</th><th>target</th><th>rollout</th>
<th>published</th></tr>
{release_rows}</table>
</body></html>
"""


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _row(cells: list[Any], css: str = "") -> str:
    tds = "".join(f"<td>{escape(str(c) if c is not None else '')}</td>" for c in cells)
    return f'<tr class="{escape(css)}">{tds}</tr>'


def render_dashboard(devices: list[Device], releases: list[Release]) -> str:
    device_rows = [
        _row(
            [
                d.device_id,
                d.model,
                d.channel,
                d.current_version,
                d.slot,
                d.state,
                d.reason,
                _iso(d.last_report_at),
            ],
            d.state,
        )
        for d in devices
    ]
    release_rows = [
        _row(
            [
                r.channel,
                r.model,
                r.version,
                r.target_path,
                f"{r.percentage}%{' paused' if r.paused else ''}",
                _iso(r.published_at),
            ]
        )
        for r in releases
    ]
    return PAGE.format(
        device_count=len(devices),
        device_rows="\n".join(device_rows),
        release_count=len(releases),
        release_rows="\n".join(release_rows),
    )


@router.get("/", response_class=HTMLResponse)
def dashboard(session: SessionDep, state: StateDep, _: Viewer) -> HTMLResponse:
    devices = list_devices(session, state.settings.report_timeout_s)
    return HTMLResponse(render_dashboard(devices, list_releases(session)))
