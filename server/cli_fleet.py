"""`ota devices`, `ota device show|wait` and `ota releases`: the fleet from the terminal,
over the server's HTTP API (`server.api_client.OtaApi`; a viewer's token suffices)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from server.cli_common import (
    JsonOpt,
    ServerOpt,
    TokenOpt,
    echo_json,
    echo_listing,
    server_api,
)
from server.cli_errors import EXIT_UNREACHABLE, fail

if TYPE_CHECKING:  # the typed client and its models load when a command runs
    from server.api_models import Device, Health, Release, Report

device_app = typer.Typer(help="One device: its state and its reports.", no_args_is_help=True)

REPORTS_SHOWN = 10
WAIT_POLL_S = 0.5


@dataclass(frozen=True)
class DeviceFilter:
    """Which devices `ota devices` lists; an empty field matches every device."""

    channel: str = ""
    model: str = ""
    state: str = ""
    version: str = ""
    silent: bool = False  # not heard from (poll or report) past the report timeout
    stale: bool = False  # trusts TUF metadata older than the server's threshold

    def matches(self, device: Device) -> bool:
        wanted = (
            (self.channel, device.channel),
            (self.model, device.model),
            (self.state, device.state),
            (self.version, device.current_version),
        )
        if any(want and want != have for want, have in wanted):
            return False
        return (device.silent or not self.silent) and (device.stale or not self.stale)


def device_line(d: Device) -> str:
    silent = "  SILENT" if d.silent else ""
    if d.stale:
        silent += f"  STALE({(d.trust_age_s or 0) / 3600:.1f} h behind)"
    moving = f" -> {d.target_version}" if d.target_version not in ("", d.current_version) else ""
    reason = f"  ({d.reason})" if d.reason else ""
    return (
        f"{d.device_id:<16} {d.model:<8} {d.channel:<8} {d.state:<12} "
        f"{d.current_version or '-'}{moving}{reason}{silent}"
    )


def report_line(r: Report) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.at))
    reason = f"  {r.reason}" if r.reason else ""
    versions = f"{r.current_version or '-'} -> {r.target_version or '-'}"
    return f"  #{r.seq:<5} {when}Z  {r.state:<12} {versions}{reason}"


def release_line(r: Release) -> str:
    rollout = "" if r.percentage is None else f"  {r.percentage:g} %"
    paused = "  paused" if r.paused else ""
    return f"{r.version:<12} {r.model:<8} {r.channel:<8} #{r.release_counter:<4}{rollout}{paused}"


def devices_command(
    server: ServerOpt,
    token: TokenOpt,
    channel: Annotated[str, typer.Option(help="Only this channel.")] = "",
    model: Annotated[str, typer.Option(help="Only this model.")] = "",
    state: Annotated[str, typer.Option(help="Only this state, e.g. committed, failed.")] = "",
    version: Annotated[str, typer.Option(help="Only devices running this version.")] = "",
    silent: Annotated[
        bool, typer.Option(help="Only devices not heard from past the report timeout.")
    ] = False,
    stale: Annotated[
        bool,
        typer.Option(
            help="Only devices whose trusted TUF metadata lags the served repository past "
            "the threshold (OTA_STALE_METADATA_AFTER_S), or has expired: a freeze attack or "
            "a device that cannot reach the repository."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The fleet as the server sees it: one device per line (filters combine)."""
    wanted = DeviceFilter(channel, model, state, version, silent, stale)
    with server_api(server, token) as api:
        devices = [d for d in api.devices() if wanted.matches(d)]
    echo_listing(devices, as_json, device_line, "no devices match")


def releases_command(server: ServerOpt, token: TokenOpt, as_json: JsonOpt = False) -> None:
    """The releases the server was told about, with their rollout percentage."""
    with server_api(server, token) as api:
        releases = api.releases()
    echo_listing(releases, as_json, release_line, "no releases")


@device_app.command("show")
def device_show(
    device_id: str, server: ServerOpt, token: TokenOpt, as_json: JsonOpt = False
) -> None:
    """One device: its current state, why it failed if it did, and its newest reports."""
    with server_api(server, token) as api:
        device = _find(api.devices(), device_id)
        reports = api.reports(device_id, limit=REPORTS_SHOWN)
    if as_json:
        echo_json(
            {
                "device": device.model_dump(mode="json"),
                "reports": [r.model_dump(mode="json") for r in reports],
            }
        )
        return
    typer.echo(device_line(device))
    if device.reason:
        typer.echo(f"failing: {device.reason}")
    typer.echo("\n".join(report_line(r) for r in reports) or "  no reports yet")


@device_app.command("wait")
def device_wait(
    device_id: str,
    server: ServerOpt,
    token: TokenOpt,
    version: Annotated[str, typer.Option(help="The version it should run.")],
    state: Annotated[str, typer.Option(help="The state it should report.")] = "committed",
    timeout: Annotated[float, typer.Option(help="Seconds before giving up.")] = 120.0,
) -> None:
    """Wait until DEVICE reports STATE on VERSION (for scripts); exit 1 on timeout."""
    deadline = time.monotonic() + timeout
    with server_api(server, token) as api:
        while True:
            device = next((d for d in api.devices() if d.device_id == device_id), None)
            if device and (device.current_version, device.state) == (version, state):
                typer.echo(device_line(device))
                return
            if time.monotonic() > deadline:
                seen = device_line(device) if device else "not enrolled"
                raise fail(f"{device_id} is not {state} on {version} after {timeout:g}s: {seen}")
            time.sleep(WAIT_POLL_S)


def _find(devices: Sequence[Device], device_id: str) -> Device:
    for device in devices:
        if device.device_id == device_id:
            return device
    raise fail(f"no device {device_id!r} is enrolled (`ota devices` lists them)")


def health_command(
    server: ServerOpt,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the server to answer.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Is the server up, and how long until its repository expires? (exit 1: a problem)"""
    answer = _health(server, wait)
    if as_json:
        echo_json(answer.model_dump(mode="json"))
    else:
        typer.echo(health_line(answer))
    for problem in answer.problems:
        typer.echo(f"ota: warning: {problem}", err=True)
    if not answer.ok:
        raise typer.Exit(1)


def _health(server: str, wait: float) -> Health:
    from server.api_client import ApiError

    deadline = time.monotonic() + wait
    with server_api(server, "") as api:
        while True:
            try:
                return api.health()
            except ApiError as exc:
                if exc.status is not None or time.monotonic() > deadline:
                    raise fail(str(exc), EXIT_UNREACHABLE) from None
            time.sleep(WAIT_POLL_S)


def health_line(answer: Health) -> str:
    repo = answer.repository
    if repo is None:
        return "server up; it serves no repository"
    left = repo.expires_in_s
    span = f"{left / 3600:.1f} h" if left > 0 else "EXPIRED"
    renew = f"re-signed every {repo.renew_every_s / 3600:g} h" if repo.renewing else "NOT renewed"
    return f"server up; timestamp v{repo.timestamp_version} valid for {span} ({renew})"
