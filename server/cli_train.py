"""`ota train ...` and `ota rollout ...`: the weekly train and staged rollouts, over the
server's HTTP API (a release engineer's token; a viewer's for `status`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from server.cli_testers import JsonOpt, ServerOpt, TokenOpt, call
from wire import API_PREFIX

train_app = typer.Typer(
    help="The weekly train: announce, internal, preview, stable.", no_args_is_help=True
)
rollout_app = typer.Typer(
    help="Staged rollouts: waves, gates, pause and abort.", no_args_is_help=True
)

ReasonOpt = Annotated[str, typer.Option("--reason", help="Recorded in the audit trail.")]


def _show(data: Any, as_json: bool, line: str) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else line)


def _rollout_line(r: dict[str, Any]) -> str:
    why = f"  paused by {r['paused_gate']}: {r['paused_reason']}" if r.get("paused_gate") else ""
    return (
        f"{r['rollout_id']}  {r['version']} {r['channel']}/{r['model']}  {r['state']}  "
        f"wave {r['wave_index'] + 1}/{len(r['waves'])} at {r['percentage']:g} %{why}"
    )


@train_app.command("status")
def train_status(server: ServerOpt, token: TokenOpt, as_json: JsonOpt = False) -> None:
    """Every train: its stage, when each stage is due, each ring's rollout state."""
    trains = call(server, token, "GET", f"{API_PREFIX}/train").get("items", [])
    lines = [
        f"{t['version']} ({t['model']}): {t['stage']}  rings {t['rings']}  due {t['due']}"
        for t in trains
    ]
    _show(trains, as_json, "\n".join(lines) or "no trains")


@train_app.command("start")
def train_start(
    version: str,
    model: str,
    server: ServerOpt,
    token: TokenOpt,
    notes: Annotated[str, typer.Option(help="Release notes for the announcement.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Put a build on this week's train."""
    body = {"version": version, "model": model, "notes": notes}
    train = call(server, token, "POST", f"{API_PREFIX}/train", body)
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
    body = {"version": version, "model": model, "force": force}
    move = call(server, token, "POST", f"{API_PREFIX}/train/advance", body)
    line = f"now at {move['moved_to']}" if move["moved_to"] else f"stays: {move['why']}"
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
        one = call(server, token, "GET", f"{API_PREFIX}/rollouts/{rollout_id}")
        _show(one, as_json, f"{_rollout_line(one)}\n  numbers {one['numbers']}")
        return
    many = call(server, token, "GET", f"{API_PREFIX}/rollouts").get("items", [])
    _show(many, as_json, "\n".join(_rollout_line(r) for r in many) or "no staged rollouts")


def _change(
    action: str, rollout_id: str, server: str, token: str, reason: str, as_json: bool
) -> None:
    path = f"{API_PREFIX}/rollouts/{rollout_id}/{action}"
    changed = call(server, token, "POST", path, {"reason": reason})
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
