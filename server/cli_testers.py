"""`ota fcode ...` and `ota feedback ...`: the release engineer's side of the beta-tester
loop, over the server's HTTP API (token of a release engineer, or a viewer for `top`)."""

from __future__ import annotations

from typing import Annotated

import typer

from server.cli_common import JsonOpt, ServerOpt, TokenOpt, echo_json, parse_duration, server_api

fcode_app = typer.Typer(help="Invite codes to the preview channel.", no_args_is_help=True)
feedback_app = typer.Typer(help="What beta testers report, ranked.", no_args_is_help=True)


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
    from server.schemas import FCodeIssue

    with server_api(server, token) as api:
        answer = api.issue_fcodes(FCodeIssue(count=count, expires_in_s=seconds, channel=channel))
    if as_json:
        echo_json(answer.model_dump(mode="json"))
        return
    typer.echo(
        f"# {len(answer.codes)} codes to {answer.channel}, "
        f"valid until {answer.expires_at.isoformat()}",
        err=True,
    )
    for code in answer.codes:
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
    with server_api(server, token) as api:
        answer = api.surfacing(build)
    groups = answer.groups[:limit]
    if as_json:
        echo_json(answer.model_copy(update={"groups": groups}).model_dump(mode="json"))
        return
    typer.echo(f"{'rank':>4} {'group':>6} {'devices':>7} {'votes':>5} {'reports':>7}  title")
    for g in groups:
        flag = "  [BLOCKING]" if g.blocking else ""
        typer.echo(
            f"{g.rank:>4} {g.group_id:>6} {g.devices:>7} {g.votes:>5} "
            f"{g.reports:>7}  {g.title}{flag}"
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
    from server.schemas import BlockingBody

    with server_api(server, token) as api:
        answer = api.mark_blocking(group, BlockingBody(blocking=not unblock, reason=reason))
    state = "blocks" if answer.blocking else "no longer blocks"
    typer.echo(f"group {answer.group_id} {state} build {answer.build}")


@feedback_app.command("close")
def feedback_close(
    server: ServerOpt,
    token: TokenOpt,
    group: Annotated[int, typer.Argument(help="The group id.")],
) -> None:
    """Close a group (fixed, or not a problem): it no longer ranks or blocks."""
    with server_api(server, token) as api:
        answer = api.close_group(group)
    typer.echo(f"group {answer.group_id} closed")
