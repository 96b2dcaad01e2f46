"""`ota fcode ...` and `ota feedback ...`: the release engineer's side of the beta-tester
loop, over the server's HTTP API (token of a release engineer, or a viewer for `top`)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any
from urllib.parse import quote

import typer
import urllib3

from wire import API_PREFIX, FEEDBACK_PATH

fcode_app = typer.Typer(help="Invite codes to the preview channel.", no_args_is_help=True)
feedback_app = typer.Typer(help="What beta testers report, ranked.", no_args_is_help=True)

ServerOpt = Annotated[str, typer.Option("--server", envvar="OTA_SERVER_URL", help="Server URL.")]
TokenOpt = Annotated[str, typer.Option("--token", envvar="OTA_TOKEN", help="Your API token.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "30m", "12h", "7d" or "2w"; ValueError otherwise."""
    match = _DURATION.match(text.lower())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 30m, 12h, 7d, 2w)")
    return float(match[1]) * _UNIT_S[match[2]]


def call(server: str, token: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """One API call; an HTTP error or an unreachable server ends the command with its reason."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        resp = urllib3.request(
            method,
            server.rstrip("/") + path,
            json=body,
            headers=headers,
            timeout=20.0,
            retries=False,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise _fail(f"cannot reach {server}: {exc}") from None
    try:
        data = json.loads(resp.data) if resp.data else {}
    except ValueError:
        data = {}
    if resp.status >= 400:
        detail = data.get("detail", "") if isinstance(data, dict) else ""
        raise _fail(f"{method} {path}: HTTP {resp.status}: {detail or resp.data[:200]!r}")
    return data if isinstance(data, dict) else {"items": data}


def _fail(message: str) -> typer.Exit:
    typer.echo(f"ota: error: {message}", err=True)
    return typer.Exit(1)


@fcode_app.command("issue")
def fcode_issue(
    server: ServerOpt,
    token: TokenOpt,
    count: Annotated[int, typer.Option(min=1, help="How many codes.")] = 1,
    expires: Annotated[str, typer.Option(help="Lifetime: 90s, 30m, 12h, 7d, 2w.")] = "7d",
    channel: Annotated[str, typer.Option(help="The channel a code opens.")] = "preview",
    as_json: JsonOpt = False,
) -> None:
    """Issue single-use F-codes; they are shown now and never again (the server keeps hashes)."""
    try:
        seconds = parse_duration(expires)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires") from None
    body = {"count": count, "expires_in_s": seconds, "channel": channel}
    answer = call(server, token, "POST", f"{API_PREFIX}/fcodes", body)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    typer.echo(
        f"# {len(answer['codes'])} codes to {answer['channel']}, "
        f"valid until {answer['expires_at']}",
        err=True,
    )
    for code in answer["codes"]:
        typer.echo(code)


@feedback_app.command("top")
def feedback_top(
    server: ServerOpt,
    token: TokenOpt,
    build: Annotated[str, typer.Option(help="The build (version) to rank reports of.")],
    limit: Annotated[int, typer.Option(min=1, help="Show this many groups.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """What surfaces first for a build: groups of reports, ranked (docs/testers.md)."""
    answer = call(server, token, "GET", f"{FEEDBACK_PATH}/surfacing?build={quote(build)}")
    groups = answer["groups"][:limit]
    if as_json:
        typer.echo(json.dumps({**answer, "groups": groups}, indent=2))
        return
    typer.echo(f"{'rank':>4} {'group':>6} {'devices':>7} {'votes':>5} {'reports':>7}  title")
    for g in groups:
        flag = "  [BLOCKING]" if g["blocking"] else ""
        typer.echo(
            f"{g['rank']:>4} {g['group_id']:>6} {g['devices']:>7} {g['votes']:>5} "
            f"{g['reports']:>7}  {g['title']}{flag}"
        )


@feedback_app.command("block")
def feedback_block(
    server: ServerOpt,
    token: TokenOpt,
    group: Annotated[int, typer.Argument(help="The group id (see `ota feedback top`).")],
    reason: Annotated[str, typer.Option(help="Why this holds the build.")] = "",
    unblock: Annotated[bool, typer.Option("--unblock", help="Lift the mark instead.")] = False,
) -> None:
    """Mark a group blocking: the build's gate holds while the group is open."""
    if not unblock and not reason:
        raise typer.BadParameter("say why with --reason", param_hint="--reason")
    body = {"blocking": not unblock, "reason": reason}
    answer = call(server, token, "POST", f"{FEEDBACK_PATH}/groups/{group}/blocking", body)
    state = "blocks" if answer["blocking"] else "no longer blocks"
    typer.echo(f"group {answer['group_id']} {state} build {answer['build']}")


@feedback_app.command("close")
def feedback_close(
    server: ServerOpt,
    token: TokenOpt,
    group: Annotated[int, typer.Argument(help="The group id.")],
) -> None:
    """Close a group (fixed, or not a problem): it no longer ranks or blocks."""
    answer = call(server, token, "POST", f"{FEEDBACK_PATH}/groups/{group}/close")
    typer.echo(f"group {answer['group_id']} closed")
