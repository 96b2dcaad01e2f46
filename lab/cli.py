"""`ota-lab`: the lab's command line (the weekly-release demo), apart from `ota` because the
server never imports the agent or the simulated hardware the lab composes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="ota-lab",
    help="Orange Friday's lab: the real server, agent and signing on simulated devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help, as `ota`'s: no rich import for `--help`
)


@app.callback()
def lab() -> None:
    """Keeps `demo` a subcommand (typer runs a lone command as the app itself)."""


@app.command("demo")
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    devices: Annotated[int, typer.Option(help="Simulated devices.")] = 20,
    testers: Annotated[int, typer.Option(help="How many of them are beta testers.")] = 5,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep everything here (default: a temp dir)")
    ] = None,
    serve: Annotated[
        bool, typer.Option(help="Then keep running, print the dashboard's URL and a token.")
    ] = False,
) -> None:
    """A whole weekly release on embedded defaults: keys, builds, server, broker, a fleet."""
    from lab.demo import DemoOptions, run_demo

    options = DemoOptions(
        devices=devices, testers=testers, workdir=workdir, as_json=as_json, serve=serve
    )
    result = run_demo(options)
    raise typer.Exit(0 if result.ok else 1)


@app.command("simulate")
def simulate(  # one option per knob of the plan and the fleet
    plan: Annotated[bool, typer.Option("--plan", help="Dry-run a rollout plan.")] = False,
    devices: Annotated[int, typer.Option(help="Devices in the fleet (stable ring).")] = 10_000,
    poll_interval: Annotated[str, typer.Option(help="How often a device polls: 6h, 30m.")] = "6h",
    offline: Annotated[float, typer.Option(help="Share of devices offline.")] = 0.0,
    fail_rate: Annotated[float, typer.Option(help="Share of installs that fail.")] = 0.0,
    waves: Annotated[str, typer.Option(help="Wave percentages.")] = "1,10,50,100",
    window: Annotated[
        list[str] | None, typer.Option(help="HH:MM-HH:MM (UTC) in which waves may advance.")
    ] = None,
    rate_per_minute: Annotated[float, typer.Option(help="Devices added a minute, at most.")] = 0,
    min_soak: Annotated[str, typer.Option(help="Time in a wave before the next.")] = "1h",
    trains: Annotated[int, typer.Option(help="Run this many weekly trains instead.")] = 0,
    bad_share: Annotated[float, typer.Option(help="With --trains: share of bad builds.")] = 0.2,
    good_fail_rate: Annotated[float, typer.Option(help="With --trains: a good build's.")] = 0.005,
    seed: Annotated[int, typer.Option(help="Seed of the simulation.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    server: Annotated[str, typer.Option(help="Without --plan: the live server's URL.")] = "",
    broker: Annotated[str, typer.Option(help="Without --plan: mqtt://host:port.")] = "",
    trusted_root: Annotated[
        Path | None, typer.Option(help="Without --plan: the provisioned root.json.")
    ] = None,
    enrollment_token_env: Annotated[
        str, typer.Option(help="Without --plan: the variable holding the enrollment token.")
    ] = "OTA_ENROLLMENT_TOKEN",  # noqa: S107  # the variable's name, not a token
    processes: Annotated[int, typer.Option(help="Without --plan: simulator processes.")] = 4,
    duration: Annotated[
        float, typer.Option(help="Without --plan: seconds to run (0: until Ctrl-C).")
    ] = 0.0,
) -> None:
    """Rehearse a rollout plan in simulated time (--plan), or run a live simulated fleet of
    light devices against a real server and broker (--server, --broker, --trusted-root)."""
    import json

    from lab import rehearsal
    from server.services.rollout_rules import GateConfig, RolloutError, TimeWindow

    if not plan:
        live = LiveFleet(server, broker, trusted_root, enrollment_token_env, processes, duration)
        run_live_fleet(live, devices, rehearsal.parse_duration(poll_interval), offline, fail_rate)
        return
    try:
        gates = GateConfig(min_soak_s=rehearsal.parse_duration(min_soak))
        rules = rehearsal.Plan(
            waves=rehearsal.parse_waves(waves),
            gates=gates,
            windows=tuple(TimeWindow.parse(text) for text in window or ()),
            rate_per_minute=rate_per_minute,
        )
        fleet = rehearsal.Fleet(
            devices, rehearsal.parse_duration(poll_interval), offline, fail_rate
        )
    except (RolloutError, ValueError) as error:
        raise typer.BadParameter(str(error)) from None
    if trains:
        runs = rehearsal.Trains(trains, bad_share, fail_rate or 0.3, good_fail_rate)
        summary = rehearsal.rehearse_trains(fleet, rules, runs, seed=seed)
        payload, lines = rehearsal.trains_json(summary), rehearsal.describe_trains(summary)
    else:
        result = rehearsal.rehearse(fleet, rules, seed=seed)
        payload = rehearsal.rehearsal_json(result, rehearsal.DEFAULT_START)
        lines = rehearsal.describe(result, rehearsal.DEFAULT_START)
    typer.echo(json.dumps(payload, indent=2) if as_json else "\n".join(lines))


@dataclass(frozen=True)
class LiveFleet:
    server: str
    broker: str
    trusted_root: Path | None
    enrollment_token_env: str
    processes: int
    duration_s: float


def run_live_fleet(
    live: LiveFleet, devices: int, poll_interval_s: float, offline: float, unhealthy: float
) -> None:
    """`simulate` without --plan: enroll and connect the fleet, then print what it does."""
    import tempfile
    import time

    from lab.fleetsim import Fleet, FleetOptions

    token = os.environ.get(live.enrollment_token_env, "")
    if not (live.server and live.broker and live.trusted_root):
        raise typer.BadParameter("give --plan, or --server, --broker and --trusted-root")
    if not token:
        raise typer.BadParameter(f"${live.enrollment_token_env} holds no enrollment token")
    if not live.trusted_root.is_file():
        raise typer.BadParameter(f"no root.json at {live.trusted_root}")
    with tempfile.TemporaryDirectory() as workdir:
        options = FleetOptions(
            server_url=live.server,
            broker_url=live.broker,
            enrollment_token=token,
            trusted_root=live.trusted_root,
            workdir=Path(workdir),
            devices=devices,
            processes=max(1, live.processes),
            offline_share=offline,
            unhealthy_share=unhealthy,
            poll_interval_s=poll_interval_s,
        )
        with Fleet(options) as fleet:
            typer.echo(f"enrolled {fleet.enroll()} devices")
            typer.echo(
                "a mosquitto learns their logins from `ota broker mosquitto-config` (then "
                "SIGHUP it); the embedded broker reads them from the database"
            )
            typer.echo(f"connecting {fleet.connect()} online devices")
            deadline = time.monotonic() + live.duration_s if live.duration_s else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(5)
                s = fleet.stats()
                typer.echo(
                    f"connected {s.connected}, polled {s.polled}, notified"
                    f" {len(s.notified_at)}, committed {s.committed}, rolled back"
                    f" {s.rolled_back}, reports {s.reports_made} made / {s.reports_acked} acked"
                )


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
