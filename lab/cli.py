"""`ota-lab`: the lab's command line (the weekly-release demo), apart from `ota` because the
server never imports the agent or the simulated hardware the lab composes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="ota-lab",
    help="Orange Friday's lab: the real server, agent and signing on simulated devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
