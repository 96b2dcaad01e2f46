"""`ota token ...` and `ota broker mosquitto-config`: the operator's side, straight on the
server's database (`--db-url`, default from OTA_DB_URL), so the first admin-issued token and
the broker's files can be made before the server ever runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from server.api_models import Role, TokenInfo
from server.cli_common import JsonOpt, echo_listing, parse_duration

if TYPE_CHECKING:  # SQLAlchemy and the server's modules load when a command runs
    from sqlalchemy.orm import Session

    from server.mosquitto import BrokerDevice

token_app = typer.Typer(help="API tokens and their roles.", no_args_is_help=True)

DbUrlOpt = Annotated[
    str | None, typer.Option("--db-url", help="SQLAlchemy URL (default: OTA_DB_URL or SQLite).")
]


def _database(db_url: str | None) -> str:
    """The URL given, else OTA_DB_URL, else ./ota-server.db only if it exists: a token made
    in a new file here would be one the server never sees."""
    from server.settings import DEFAULT_DB_URL, Settings

    url = db_url or Settings.from_env().db_url
    if db_url is None and url == DEFAULT_DB_URL:
        local = Path(url.removeprefix("sqlite:///"))
        if not local.exists():
            raise _fail(
                f"no server database at ./{local} in this directory: pass --db-url (or set "
                "OTA_DB_URL) to the database `ota server run` uses"
            )
        typer.echo(f"ota: warning: using ./{local} (the default); --db-url to choose", err=True)
    return url


@contextmanager
def _session(db_url: str | None) -> Iterator[Session]:
    """A session on the server's database, migrated to head first (idempotent)."""
    from server.db import make_engine, make_sessions, upgrade_to_head

    engine = make_engine(_database(db_url))
    try:
        upgrade_to_head(engine)
        with make_sessions(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"ota: error: {message}", err=True)
    return typer.Exit(1)


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option(help="What the token may do.")],
    name: Annotated[str, typer.Option(help="A unique name (revoke by it; never reused).")],
    subject: Annotated[str, typer.Option(help="Device id, for a device-bound tester.")] = "",
    expires: Annotated[
        str, typer.Option(help="Lifetime, e.g. 30d or 12h (default 90d, at most 400d).")
    ] = "90d",
    db_url: DbUrlOpt = None,
) -> None:
    """Issue a token and print it; it is shown only this once (the database keeps a hash)."""
    from server.auth import issue_token
    from server.errors import ServiceError

    try:
        lifetime = timedelta(seconds=parse_duration(expires))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    with _session(db_url) as session:
        try:
            token = issue_token(
                session, role=role, subject=subject or name, name=name, lifetime=lifetime
            )
        except ServiceError as exc:
            raise _fail(str(exc)) from None
        session.commit()
    typer.echo(token)


@token_app.command("list")
def token_list(
    db_url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every token's name, role, subject, dates and state (never the secret)."""
    from server.auth import list_tokens

    with _session(db_url) as session:
        tokens = list_tokens(session)
    echo_listing(tokens, as_json, token_line, "no tokens")


def token_line(t: TokenInfo) -> str:
    used = t.last_used_at.isoformat() if t.last_used_at else "never used"
    return f"{t.name}\t{t.role}\t{t.subject}\t{t.created_at.isoformat()}\t{token_state(t)}\t{used}"


def token_state(token: TokenInfo, now: datetime | None = None) -> str:
    from server.models import utcnow

    if token.revoked_at:
        return f"revoked {token.revoked_at.isoformat()}"
    if token.expires_at <= (now or utcnow()):
        return f"expired {token.expires_at.isoformat()}"
    return f"active until {token.expires_at.isoformat()}"


@token_app.command("revoke")
def token_revoke(name: str, db_url: DbUrlOpt = None) -> None:
    """Revoke the active token with this name; it stops working at once."""
    from server.auth import revoke_token

    with _session(db_url) as session:
        if not revoke_token(session, name):
            raise _fail(f"no active token named {name!r}")
    typer.echo(f"revoked {name}")


def registry_broker_devices(session: Session) -> tuple[list[BrokerDevice], list[str]]:
    """Every enrolled device as a broker login from its stored `$7$` hash, and the ids of
    devices enrolled before the hash was kept (they need to re-enroll to get a login)."""
    from sqlalchemy import select

    from server.models import Device
    from server.mosquitto import BrokerDevice

    devices, missing = [], []
    for d in session.scalars(select(Device).order_by(Device.device_id)):
        if not d.broker_password_hash:
            missing.append(d.device_id)
            continue
        devices.append(BrokerDevice(d.device_id, d.channel, d.model, "", d.broker_password_hash))
    return devices, missing


def broker_mosquitto_config(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the broker's files.")],
    server_password_env: Annotated[
        str,
        typer.Option(help="Environment variable holding the server user's broker password."),
    ],
    db_url: DbUrlOpt = None,
    port: Annotated[int, typer.Option(help="The TLS listener's port.")] = 8883,
    hostname: Annotated[
        list[str] | None, typer.Option(help="Name in the certificate (repeatable).")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option(help="IP in the certificate (repeatable).")
    ] = None,
    bind: Annotated[str, typer.Option(help="Address the listener binds.")] = "127.0.0.1",
    server_port: Annotated[
        int | None,
        typer.Option(
            help="A listener for the server's processes only (its login alone; several "
            "workers or replicas share it, each with its own client id)."
        ),
    ] = None,
    server_bind: Annotated[
        str, typer.Option(help="Address the server listener binds (TLS unless loopback).")
    ] = "127.0.0.1",
    server_user: Annotated[str, typer.Option(help="The server's broker login.")] = "ota-server",
    run_as_user: Annotated[
        str | None, typer.Option(help="User mosquitto runs as when started as root.")
    ] = None,
) -> None:
    """Write mosquitto's TLS files, logins and ACL for every enrolled device in the registry."""
    from server.mosquitto import (
        BrokerConfigError,
        is_loopback,
        usable_devices,
        write_broker_config,
    )

    server_password = os.environ.get(server_password_env, "")
    if not server_password:
        raise _fail(f"${server_password_env} is unset or empty: the server user needs a password")
    with _session(db_url) as session:
        devices, missing = registry_broker_devices(session)
    for device_id in missing:
        typer.echo(f"ota: warning: {device_id} has no broker login yet (re-enroll it)", err=True)
    devices, refused = usable_devices(devices, server_user)
    for device_id, reason in refused.items():
        typer.echo(f"ota: warning: {device_id!r} left out of the broker: {reason}", err=True)
    try:
        paths = write_broker_config(
            out_dir,
            devices,
            port=port,
            hostnames=hostname or ["localhost"],
            ips=ip or ["127.0.0.1"],
            server_user=server_user,
            server_password=server_password,
            bind=bind,
            server_port=server_port,
            server_bind=server_bind,
            run_as_user=run_as_user,
        )
    except BrokerConfigError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{len(devices)} device logins; mosquitto -c {paths.conf}")
    if server_port is not None:
        scheme = "mqtt" if is_loopback(server_bind) else "mqtts"  # as the listener speaks
        typer.echo(
            f"servers connect to {scheme}://{server_user}:<${server_password_env}>@"
            f"{server_bind}:{server_port}"
        )
