"""`ota`: the release engineer's and the operator's command line.

One tool over several modules: each command group (`ota keys`, `ota token`, ...) lives in
its own module and is imported only when it runs, so `ota --help` and the commands that do
not need FastAPI, SQLAlchemy or python-tuf start without loading them (tests/e2e asserts
it). Errors are one line, `ota: error: ...`, with the exit codes of `server.cli_errors`.
"""

from __future__ import annotations

import base64
import importlib
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import _click as click  # typer >= 0.29 vendors click: its groups are these
from typer.core import TyperGroup

from server.cli_errors import EXIT_USER, fail, port_free

# name: (module, typer app or command, one line of help). Kept here so `ota --help` can
# list the groups without importing them.
LAZY_GROUPS: dict[str, tuple[str, str, str]] = {
    "keys": ("signing.cli", "keys_app", "Signing keys and the repository's first metadata."),
    "release": ("signing.cli", "release_app", "Sign and publish ROM builds."),
    "repo": ("signing.cli", "repo_app", "Inspect the signed repository; how long until expiry."),
    "releases": ("server.cli_fleet", "releases_command", "The releases the server knows."),
    "devices": ("server.cli_fleet", "devices_command", "The fleet: filter and list devices."),
    "device": (
        "server.cli_identity",
        "device_app",
        "One device: its state, its reports, its identity (reset, audit).",
    ),
    "enroll-token": (
        "server.cli_identity",
        "enroll_token_app",
        "Enrollment tokens limited in uses, lifetime, model and channel.",
    ),
    "rollout": ("server.cli_train", "rollout_app", "Staged rollouts: waves, gates, watch."),
    "train": ("server.cli_train", "train_app", "The weekly train: announce to stable."),
    "fcode": ("server.cli_testers", "fcode_app", "Invite codes to the preview channel."),
    "feedback": ("server.cli_testers", "feedback_app", "What beta testers report, ranked."),
    "token": ("server.cli_admin", "token_app", "API tokens and their roles."),
    "health": ("server.cli_fleet", "health_command", "Is the server up; when does it expire?"),
}


BROKER_LAZY: dict[str, tuple[str, str, str]] = {
    "mosquitto-config": (
        "server.cli_admin",
        "broker_mosquitto_config",
        "Write mosquitto's TLS files, logins and ACL for every enrolled device.",
    ),
}


class LazyGroup(TyperGroup):
    """A click group whose lazy sub-commands are imported when named, not when listed."""

    lazy: dict[str, tuple[str, str, str]] = LAZY_GROUPS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, attribute, _ = self.lazy[cmd_name]
        target = getattr(importlib.import_module(module), attribute)
        # mounted as `add_typer` would: a one-command app stays a group; plain help as for
        # `ota --help` (typer's rich help would import rich for every `--help`)
        holder = typer.Typer(rich_markup_mode=None)
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=cmd_name)
        else:
            holder.command(cmd_name)(target)
        return typer.main.get_group(holder).get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_line) for name, (_, _, help_line) in self.lazy.items()]
        for name in super().list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=60)))
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


class BrokerGroup(LazyGroup):
    lazy = BROKER_LAZY


app = typer.Typer(
    name="ota",
    cls=LazyGroup,
    help="Orange Friday: sign weekly ROM builds, run the update server and the broker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: listing the groups imports none of them
    epilog="Exit codes: 0 ok, 1 refused or failed, 2 usage, 3 server unreachable.",
)
server_app = typer.Typer(help="The update server.", no_args_is_help=True)
broker_app = typer.Typer(
    cls=BrokerGroup, help="The embedded MQTT broker.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(server_app, name="server")
app.add_typer(broker_app, name="broker")

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]


@server_app.command("run")
def server_run(
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OTA_PORT", help="Port to listen on.")] = 8080,
    db_url: Annotated[
        str | None,
        typer.Option(envvar="OTA_DB_URL", help="SQLAlchemy URL (default: ./ota-server.db)"),
    ] = None,
    repo_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="OTA_REPO_DIR",
            help="TUF repository to serve under /tuf/ (metadata/, targets/)",
        ),
    ] = None,
    online_keys: Annotated[
        Path | None,
        typer.Option(
            envvar="OTA_ONLINE_KEYS_DIR",
            help="Folder with timestamp.pem and snapshot.pem: the server re-signs them so the "
            "repository never expires (default: keys/ next to --repo-dir, as `ota keys init` "
            "lays it out).",
        ),
    ] = None,
    no_renew: Annotated[
        bool, typer.Option("--no-renew", help="Serve without re-signing (expires in a day).")
    ] = False,
    broker_url: Annotated[
        str | None, typer.Option(envvar="OTA_BROKER_URL", help="mqtt://host:port")
    ] = None,
    targets_store: Annotated[
        str | None,
        typer.Option(
            envvar="OTA_TARGETS_STORE",
            help="s3://bucket/prefix whose targets/ devices download from by presigned URL "
            "(boto3's usual credentials, on the server only).",
        ),
    ] = None,
    targets_public_url: Annotated[
        str | None,
        typer.Option(
            envvar="OTA_TARGETS_PUBLIC_URL",
            help="https:// base of the targets/ on a CDN or public-read bucket.",
        ),
    ] = None,
    s3_endpoint_url: Annotated[
        str | None,
        typer.Option(envvar="OTA_S3_ENDPOINT_URL", help="S3-compatible endpoint (MinIO, moto)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="OTA_WORKERS",
            help="Server processes (uvicorn workers; PostgreSQL only). Each takes a share of "
            "the MQTT reports; once-only work runs on the advisory-lock leader.",
        ),
    ] = 1,
) -> None:
    """Serve the API, the TUF repository and the dashboard (settings also from OTA_* env)."""
    import dataclasses

    from server.settings import Settings

    settings = Settings.from_env()
    settings = dataclasses.replace(
        settings,
        db_url=db_url or settings.db_url,
        repo_dir=repo_dir or settings.repo_dir,
        broker_url=broker_url or settings.broker_url,
        online_keys_dir=None if no_renew else _online_keys(online_keys, repo_dir),
        targets_store=targets_store or settings.targets_store,
        targets_public_url=targets_public_url or settings.targets_public_url,
        s3_endpoint_url=s3_endpoint_url or settings.s3_endpoint_url,
    )
    if workers > 1 and not settings.db_url.startswith("postgresql"):
        raise fail(
            f"--workers {workers} needs PostgreSQL (OTA_DB_URL=postgresql+psycopg://...); "
            "SQLite has one writer: run one worker",
            EXIT_USER,
        )
    port_free(host, port, "--port")
    _serve(settings, host, port, workers)


def _online_keys(given: Path | None, repo_dir: Path | None) -> Path | None:
    """The online keys folder: as given, else `keys/` beside the served repository."""
    if repo_dir is None:
        return given
    keys = given or repo_dir.resolve().parent / "keys"
    if not (keys / "timestamp.pem").is_file():
        raise fail(
            f"no online keys at {keys} (timestamp.pem, snapshot.pem) to keep {repo_dir} "
            "fresh: pass --online-keys DIR, or --no-renew (see docs/operations.md#online-keys)",
            EXIT_USER,
        )
    return keys


WORKER_SETTINGS_ENV = "OTA_WORKER_SETTINGS"  # the parent's settings, for its worker processes
SHARE_GROUP_ENV = "OTA_MQTT_SHARE_GROUP"  # "" for NATS: it grants `$share/` but delivers nothing
SHARE_GROUP = "ota-ingest"


def _serve(settings: Any, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from server.app import create_app
    from server.json_logs import configure_json_logging

    # JSON lines; our access log (server.access_log) instead of uvicorn's, which prints queries
    configure_json_logging()
    try:
        app = create_app(settings)
    except ValueError as exc:  # settings that cannot work (e.g. OTA_TARGETS_STORE)
        raise fail(str(exc), EXIT_USER) from None
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
        return
    # uvicorn starts each worker by import: the settings travel in the environment
    os.environ[WORKER_SETTINGS_ENV] = base64.b64encode(pickle.dumps(settings)).decode()
    uvicorn.run(
        "server.cli:worker_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
    )


def worker_app() -> Any:
    """One of `--workers N`: the parent's settings, a client id of its own (pid suffix) and
    the shared subscription, so the broker gives each report to exactly one worker. With
    OTA_MQTT_SHARE_GROUP="" (NATS) each worker hears every report: stored once all the same
    (a report is unique by device and seq), at the cost of parsing it in every worker."""
    import dataclasses

    from server.app import create_app
    from server.json_logs import configure_json_logging

    configure_json_logging()
    # written by our own parent process just before it started us: not outside input
    settings = pickle.loads(base64.b64decode(os.environ[WORKER_SETTINGS_ENV]))  # noqa: S301
    settings = dataclasses.replace(
        settings,
        mqtt_client_id=f"{settings.mqtt_client_id}-{os.getpid()}",
        mqtt_share_group=os.environ.get(SHARE_GROUP_ENV, SHARE_GROUP) or None,
    )
    return create_app(settings)


@broker_app.command("run")
def broker_run(
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OTA_MQTT_PORT", help="Port to listen on.")] = 1883,
    db_url: Annotated[
        str | None,
        typer.Option(
            envvar="OTA_DB_URL",
            help="The server's database: device logins (default: ./ota-server.db)",
        ),
    ] = None,
    server_user: Annotated[str, typer.Option(help="The server's broker login.")] = "ota-server",
    server_password_env: Annotated[
        str, typer.Option(help="Environment variable holding the server user's password.")
    ] = "OTA_BROKER_PASSWORD",  # noqa: S107  # the variable's name, not a password
) -> None:
    """Start the embedded MQTT broker (amqtt): logins only, each device's checked against the
    server's database; the server connects as `server_user` (mqtt://USER:PASSWORD@HOST:PORT)."""
    port_free(host, port, "--port")
    password = os.environ.get(server_password_env, "")
    if not password:
        raise fail(f"${server_password_env} is unset or empty: the server's broker login needs it")
    from server.broker import run_embedded_broker
    from server.broker_access import BrokerAccess
    from server.mosquitto import hash_password
    from server.settings import Settings

    url = db_url or Settings.from_env().db_url
    run_embedded_broker(host, port, BrokerAccess(url, hash_password(password), server_user))


@app.command(
    "simulate",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def simulate(ctx: typer.Context) -> None:
    """Rehearse a rollout plan (--plan) or run a simulated fleet (--devices N): `ota-lab simulate`.

    The simulator composes the agent and the simulated hardware, which the server never
    imports: this hands the same arguments to the lab's command in this environment.
    """
    lab = Path(sys.argv[0]).with_name("ota-lab")
    if not lab.exists():
        found = shutil.which("ota-lab")
        if found is None:
            raise fail("`ota simulate` needs the lab (ota-lab), not installed with this server")
        lab = Path(found)
    os.execv(lab, [str(lab), "simulate", *ctx.args])  # noqa: S606 - our own entry point


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
