"""`ota`: the release engineer's and the operator's command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from server.cli_admin import broker_mosquitto_config, token_app
from server.cli_identity import device_app, enroll_token_app
from server.cli_testers import fcode_app, feedback_app
from server.cli_train import rollout_app, train_app
from signing.cli import keys_app, release_app, repo_app

app = typer.Typer(
    name="ota",
    help="Orange Friday: sign weekly ROM builds, run the update server and the broker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(keys_app, name="keys")
app.add_typer(release_app, name="release")
app.add_typer(repo_app, name="repo")
server_app = typer.Typer(help="The update server.", no_args_is_help=True)
broker_app = typer.Typer(help="The embedded MQTT broker.", no_args_is_help=True)
app.add_typer(server_app, name="server")
app.add_typer(fcode_app, name="fcode")
app.add_typer(feedback_app, name="feedback")
app.add_typer(broker_app, name="broker")
app.add_typer(train_app, name="train")
app.add_typer(rollout_app, name="rollout")
app.add_typer(token_app, name="token")
app.add_typer(device_app, name="device")
app.add_typer(enroll_token_app, name="enroll-token")
broker_app.command("mosquitto-config")(broker_mosquitto_config)


@server_app.command("run")
def server_run(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    db_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: env/SQLite)")] = None,
    repo_dir: Annotated[
        Path | None, typer.Option(help="TUF repository to serve under /tuf/ (metadata/, targets/)")
    ] = None,
    broker_url: Annotated[str | None, typer.Option(help="mqtt://host:port")] = None,
) -> None:
    """Serve the API, the TUF repository and the dashboard (settings also from OTA_* env)."""
    import dataclasses

    import uvicorn

    from server.app import create_app
    from server.json_logs import configure_json_logging
    from server.settings import Settings

    settings = Settings.from_env()
    settings = dataclasses.replace(
        settings,
        db_url=db_url or settings.db_url,
        repo_dir=repo_dir or settings.repo_dir,
        broker_url=broker_url or settings.broker_url,
    )
    # JSON lines; our access log (server.access_log) instead of uvicorn's, which prints queries
    configure_json_logging()
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


@broker_app.command("run")
def broker_run(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 1883,
    db_url: Annotated[
        str | None, typer.Option(help="The server's database: device logins (default: env).")
    ] = None,
    server_user: Annotated[str, typer.Option(help="The server's broker login.")] = "ota-server",
    server_password_env: Annotated[
        str, typer.Option(help="Environment variable holding the server user's password.")
    ] = "OTA_BROKER_PASSWORD",  # noqa: S107  # the variable's name, not a password
) -> None:
    """Start the embedded MQTT broker (amqtt): logins only, checked against the server's
    database; the server connects as `server_user` (mqtt://USER:PASSWORD@HOST:PORT)."""
    from server.broker import run_embedded_broker
    from server.broker_access import BrokerAccess
    from server.mosquitto import hash_password
    from server.settings import Settings

    password = os.environ.get(server_password_env, "")
    if not password:
        typer.echo(f"ota: error: ${server_password_env} is unset or empty", err=True)
        raise typer.Exit(1)
    url = db_url or Settings.from_env().db_url
    run_embedded_broker(host, port, BrokerAccess(url, hash_password(password), server_user))


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
