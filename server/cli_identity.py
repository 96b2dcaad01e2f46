"""`ota device reset` and `ota enroll-token ...`: the admin's side of device identity, over the
server's HTTP API with an admin token (docs/decisions/0017-device-identity.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from server.cli_common import JsonOpt, ServerOpt, TokenOpt, echo_json, parse_duration, server_api
from server.cli_fleet import device_app

# `ota device ...`: cli_fleet's show and wait, and the identity commands below
device_app.info.help = "One device: its state, its reports, its identity (reset, audit)."
enroll_token_app = typer.Typer(
    help="Enrollment tokens limited in uses, lifetime, model and channel.", no_args_is_help=True
)


@device_app.command("reset")
def device_reset(
    device_id: Annotated[str, typer.Argument(help="The device whose key is forgotten.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the device audit).")],
    server: ServerOpt,
    token: TokenOpt,
) -> None:
    """Forget a device's key, tokens and broker login, so that it (or its replacement) may
    enroll afresh with an enrollment token. Audited with your reason."""
    with server_api(server, token) as api:
        entry = api.reset_device(device_id, reason)
    typer.echo(f"reset {device_id} at {entry.at.isoformat()}: it may enroll again")


@device_app.command("audit")
def device_audit(device_id: str, server: ServerOpt, token: TokenOpt) -> None:
    """What happened to a device's identity: enrollments, resets, broker secrets."""
    with server_api(server, token) as api:
        echo_json([e.model_dump(mode="json") for e in api.device_audit(device_id)])


@enroll_token_app.command("create")
def enroll_token_create(
    name: Annotated[str, typer.Option(help="A unique name (revoke by it).")],
    server: ServerOpt,
    token: TokenOpt,
    expires: Annotated[str, typer.Option(help="Lifetime: 90s, 30m, 12h, 7d, 2w.")] = "7d",
    uses: Annotated[int | None, typer.Option(min=1, help="How many enrollments.")] = None,
    model: Annotated[str | None, typer.Option(help="Only devices of this model.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only onto this channel.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an enrollment token and print it; it is shown only this once."""
    try:
        seconds = parse_duration(expires)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires") from None
    from server.schemas import EnrollmentTokenIn

    body = EnrollmentTokenIn(
        name=name, expires_in_s=seconds, max_uses=uses, model=model, channel=channel
    )
    with server_api(server, token) as api:
        made = api.create_enrollment_token(body)
    if as_json:
        echo_json(made.model_dump(mode="json"))
        return
    typer.echo(made.token)


@enroll_token_app.command("list")
def enroll_token_list(server: ServerOpt, token: TokenOpt) -> None:
    """Every enrollment token with its limits and uses (never the secret)."""
    with server_api(server, token) as api:
        echo_json([t.model_dump(mode="json") for t in api.enrollment_tokens()])


@enroll_token_app.command("revoke")
def enroll_token_revoke(name: str, server: ServerOpt, token: TokenOpt) -> None:
    """Revoke an enrollment token; devices not enrolled yet can no longer use it."""
    with server_api(server, token) as api:
        api.revoke_enrollment_token(name)
    typer.echo(f"revoked {name}")
