"""`ota train ...` and `ota rollout ...`: the weekly train and staged rollouts, over the
server's HTTP API (a release engineer's token; a viewer's for `status`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from server.cli_common import JsonOpt, ServerOpt, TokenOpt, echo_json, echo_listing, server_api
from server.cli_errors import fail, warn
from wire.versions import InvalidVersionError, Version

if TYPE_CHECKING:  # the typed client and its models load when a command runs
    from pydantic import BaseModel

    from server.api_models import Release, RolloutStatus, TrainStatus

train_app = typer.Typer(
    help="The weekly train: announce, internal, preview, stable.", no_args_is_help=True
)
rollout_app = typer.Typer(
    help="Staged rollouts: waves, gates, pause and abort.", no_args_is_help=True
)

ReasonOpt = Annotated[str, typer.Option("--reason", help="Recorded in the audit trail.")]


def _show(data: BaseModel | Sequence[BaseModel], as_json: bool, line: str) -> None:
    if not as_json:
        typer.echo(line)
    elif isinstance(data, Sequence):
        echo_json([item.model_dump(mode="json") for item in data])
    else:
        echo_json(data.model_dump(mode="json"))


def check_version(version: str) -> None:
    """A version string the devices can order (2026.48, 1.2.3), or one line and exit 1."""
    try:
        Version(version)
    except InvalidVersionError as exc:
        raise fail(str(exc)) from None


def _check_train_build(releases: Sequence[Release], version: str, model: str) -> None:
    """Warn about a build the server has never seen (the train waits for it at each ring);
    refuse one that already reached every stable device."""
    mine = [r for r in releases if (r.version, r.model) == (version, model)]
    if not mine:
        warn(f"the server has no release {version} for {model} yet; each ring waits for it")
    if any(r.channel == "stable" and r.percentage == 100 and not r.paused for r in mine):
        raise fail(f"{version} for {model} is already at 100 % on stable: nothing to stage")


def _rollout_line(r: RolloutStatus) -> str:
    why = f"  paused by {r.paused_gate}: {r.paused_reason}" if r.paused_gate else ""
    return (
        f"{r.rollout_id}  {r.version} {r.channel}/{r.model}  {r.state}  "
        f"wave {r.wave_index + 1}/{len(r.waves)} at {r.percentage:g} %{why}"
    )


@train_app.command("status")
def train_status(server: ServerOpt, token: TokenOpt, as_json: JsonOpt = False) -> None:
    """Every train: its stage, when each stage is due, each ring's rollout state."""
    with server_api(server, token) as api:
        trains = api.trains()
    echo_listing(trains, as_json, _train_line, "no trains")


def _train_line(t: TrainStatus) -> str:
    due = {stage: moment.isoformat() for stage, moment in t.due.items()}
    return f"{t.version} ({t.model}): {t.stage}  rings {t.rings}  due {due}"


@train_app.command("start")
def train_start(
    version: str,
    model: str,
    server: ServerOpt,
    token: TokenOpt,
    notes: Annotated[str, typer.Option(help="Release notes for the announcement.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Put a build on this week's train (refused for a build already fully out on stable)."""
    from server.schemas import TrainIn

    check_version(version)
    with server_api(server, token) as api:
        _check_train_build(api.releases(), version, model)
        train = api.start_train(TrainIn(version=version, model=model, notes=notes))
    _show(train, as_json, f"{version} ({model}) is on the train")


@train_app.command("advance")
def train_advance(
    version: str,
    model: str,
    server: ServerOpt,
    token: TokenOpt,
    force: Annotated[bool, typer.Option(help="Do not wait for the stage's day.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Move the train to its next stage if the schedule (or --force) and the gates allow."""
    from server.schemas import TrainAdvanceIn

    with server_api(server, token) as api:
        move = api.advance_train(TrainAdvanceIn(version=version, model=model, force=force))
    line = f"now at {move.moved_to}" if move.moved_to else f"stays: {move.why}"
    _show(move, as_json, line)


@rollout_app.command("status")
def rollout_status(
    server: ServerOpt,
    token: TokenOpt,
    rollout_id: Annotated[str, typer.Argument(help="One rollout (default: all).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Wave, percentage, state, the gate numbers and why a rollout is paused."""
    if rollout_id:
        with server_api(server, token) as api:
            one = api.rollout(rollout_id)
        numbers = one.numbers.model_dump() if one.numbers else {}
        _show(one, as_json, f"{_rollout_line(one)}\n  numbers {numbers}")
        return
    with server_api(server, token) as api:
        many = api.rollouts()
    echo_listing(many, as_json, _rollout_line, "no staged rollouts")


def _change(
    action: str, rollout_id: str, server: str, token: str, reason: str, as_json: bool
) -> None:
    with server_api(server, token) as api:
        changed = api.change_rollout(rollout_id, action, reason)
    _show(changed, as_json, _rollout_line(changed))


def _by_hand(action: str, doc: str) -> None:
    def command(
        rollout_id: str,
        server: ServerOpt,
        token: TokenOpt,
        reason: ReasonOpt = "",
        as_json: JsonOpt = False,
    ) -> None:
        _change(action, rollout_id, server, token, reason, as_json)

    command.__doc__ = doc
    command.__name__ = f"rollout_{action}"
    rollout_app.command(action)(command)


_by_hand("pause", "Stop the rollout where it is (devices that have not started wait).")
_by_hand("resume", "Go on; the gates are looked at again on the next tick.")
_by_hand(
    "abort", "For good: the notice says paused at 0 %; devices that have not started leave it."
)


@rollout_app.command("override")
def rollout_override(
    rollout_id: str,
    server: ServerOpt,
    token: TokenOpt,
    reason: Annotated[str, typer.Option("--reason", help="Required; recorded.")],
    as_json: JsonOpt = False,
) -> None:
    """Overrule the gate that paused the rollout and move to the next wave."""
    _change("override", rollout_id, server, token, reason, as_json)


@rollout_app.command("watch")
def rollout_watch(
    server: ServerOpt,
    token: TokenOpt,
    rollout_id: Annotated[str, typer.Argument(help="One rollout (default: all).")] = "",
    every: Annotated[float, typer.Option(min=0.2, help="Seconds between looks.")] = 2.0,
    count: Annotated[int, typer.Option(help="Stop after this many looks (0: Ctrl-C).")] = 0,
) -> None:
    """Live: each rollout's wave, percentage, state and gate numbers, redrawn in place."""
    from rich.live import Live

    looks = 0
    with server_api(server, token) as api, Live(auto_refresh=False) as live:
        while True:
            rollouts = [api.rollout(rollout_id)] if rollout_id else api.rollouts()
            live.update(rollout_table(rollouts), refresh=True)
            looks += 1
            if count and looks >= count:
                return
            time.sleep(every)


def rollout_table(rollouts: Sequence[RolloutStatus]) -> Any:
    """A rich Table: one row per rollout, the gate numbers of its last evaluation."""
    from rich.table import Table

    table = Table("rollout", "release", "state", "wave", "%", "ok/rb/fail", "why paused")
    for r in rollouts:
        n = r.numbers
        counts = f"{n.success}/{n.rolled_back}/{n.failed}" if n else "-"
        table.add_row(
            r.rollout_id[:8],
            f"{r.version} {r.channel}/{r.model}",
            str(r.state),
            f"{r.wave_index + 1}/{len(r.waves)}",
            f"{r.percentage:g}",
            counts,
            f"{r.paused_gate}: {r.paused_reason}" if r.paused_gate else "",
        )
    return table
