"""`ota device reset` and `ota enroll-token ...`: the admin's side of device identity, over the
server's HTTP API with an admin token (docs/decisions/0017-device-identity.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from server.cli_common import (
    JsonOpt,
    ServerOpt,
    TokenOpt,
    echo_json,
    echo_listing,
    parse_duration,
    server_api,
)

if TYPE_CHECKING:
    from server.api_models import DeviceAuditEntry, EnrollmentTokenInfo
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
def device_audit(
    device_id: str, server: ServerOpt, token: TokenOpt, as_json: JsonOpt = False
) -> None:
    """What happened to a device's identity: enrollments, resets, broker secrets."""
    with server_api(server, token) as api:
        entries = api.device_audit(device_id)
    echo_listing(entries, as_json, audit_line, f"nothing audited for {device_id}")


def audit_line(e: DeviceAuditEntry) -> str:
    reason = f"  ({e.reason})" if e.reason else ""
    detail = "  " + " ".join(f"{k}={v}" for k, v in sorted(e.detail.items())) if e.detail else ""
    return f"{e.at.isoformat()}  {e.action:<16} by {e.actor}{reason}{detail}"


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
def enroll_token_list(server: ServerOpt, token: TokenOpt, as_json: JsonOpt = False) -> None:
    """Every enrollment token with its limits and uses (never the secret)."""
    with server_api(server, token) as api:
        tokens = api.enrollment_tokens()
    echo_listing(tokens, as_json, enrollment_token_line, "no enrollment tokens")


def enrollment_token_line(t: EnrollmentTokenInfo) -> str:
    uses = f"{t.uses}/{t.max_uses}" if t.max_uses is not None else f"{t.uses}/-"
    state = f"revoked {t.revoked_at.isoformat()}" if t.revoked_at else "active"
    return (
        f"{t.name:<16} model {t.model or 'any':<8} channel {t.channel or 'any':<8} "
        f"uses {uses:<6} until {t.expires_at.isoformat()}  {state}"
    )


@enroll_token_app.command("revoke")
def enroll_token_revoke(name: str, server: ServerOpt, token: TokenOpt) -> None:
    """Revoke an enrollment token; devices not enrolled yet can no longer use it."""
    with server_api(server, token) as api:
        api.revoke_enrollment_token(name)
    typer.echo(f"revoked {name}")
