"""`ota keys ...` and `ota release ...`: the release engineer's signing commands.

Two typer apps that `server.cli` mounts. Every SigningError becomes one line on stderr and
exit code 1; typer's own usage errors exit with 2. The key passphrase comes from the
environment (OTA_KEY_PASSPHRASE), never from the command line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from signing.errors import NotifyError, PublishError, SigningError
from signing.progress import BYTES

if TYPE_CHECKING:
    from rich.progress import Progress as Bars

    from signing.progress import Advance, Progress
    from signing.repo import PublishedRelease
    from signing.status import RoleStatus
    from signing.storage import Storage

# Each command imports the signing modules it runs, inside its body: they load python-tuf,
# securesystemslib and (through its KMS signers) boto3, which `ota keys --help`, `ota repo
# --help` and the usage errors do not need (tests/e2e/test_cli_startup.py).

PASSPHRASE_ENV = "OTA_KEY_PASSPHRASE"  # noqa: S105  # the variable's name, not its value

keys_app = typer.Typer(
    help="Signing keys and the repository's first metadata.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@keys_app.callback()
def _keys_group() -> None:
    """Signing keys and the repository's first metadata."""


release_app = typer.Typer(
    help="Sign and publish ROM builds.", no_args_is_help=True, pretty_exceptions_enable=False
)

RepoOption = Annotated[
    Path,
    typer.Option(
        "--repo", envvar="OTA_REPO", help="Repository folder: keys/, root.json, repository/."
    ),
]
StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage", help="Where metadata/ and targets/ go: a path, file:// or s3://bucket/prefix."
    ),
]
EndpointOption = Annotated[
    str | None, typer.Option("--s3-endpoint-url", help="S3-compatible endpoint (MinIO, moto).")
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"ota: error: {message}", err=True)
    return typer.Exit(code=1)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Turn any SigningError into one clear line on stderr and exit code 1."""
    try:
        yield
    except SigningError as exc:
        raise _fail(str(exc)) from None


def _passphrase() -> str | None:
    return os.environ.get(PASSPHRASE_ENV) or None


def _storage(url: str | None, endpoint: str | None) -> Storage | None:
    from signing.storage import open_storage

    return None if url is None else open_storage(url, s3_endpoint_url=endpoint)


@keys_app.command("init")
def keys_init(
    repo: RepoOption,
    root_threshold: Annotated[
        int, typer.Option(min=1, help="Root signatures needed to trust a new root.")
    ] = 2,
    root_keys: Annotated[int, typer.Option(min=1, help="How many root keys to make.")] = 3,
    storage: StorageOption = None,
    s3_endpoint_url: EndpointOption = None,
) -> None:
    """Create ed25519 keys for all roles and sign version 1 of the repository.

    Default layout: root 2-of-3 (offline; move two of the keys to other people or an HSM),
    targets 1 (offline), snapshot and timestamp 1 each (online: they go to the server).
    Channels get their own keys on first publish or with `ota keys add-channel`."""
    from signing.keys import init_keys

    with _clear_errors():
        trusted = init_keys(
            repo,
            root_threshold=root_threshold,
            root_keys=root_keys,
            passphrase=_passphrase(),
            storage=_storage(storage, s3_endpoint_url),
        )
    encrypted = "encrypted" if _passphrase() else "NOT encrypted (set OTA_KEY_PASSPHRASE)"
    keys = repo / "keys"
    typer.echo(f"keys written to {keys} ({encrypted})")
    typer.echo(f"provision devices with {trusted}")
    typer.echo(
        f"online keys for the server: {keys / 'timestamp.pem'} and {keys / 'snapshot.pem'} "
        "(`ota server run --online-keys DIR` re-signs with them; keys/ beside --repo-dir is "
        "the default); keep the others offline"
    )


@keys_app.command("add-channel")
def keys_add_channel(
    channel: Annotated[str, typer.Argument(help="Channel name, e.g. preview.")],
    repo: RepoOption,
    keys: Annotated[int, typer.Option("--keys", min=1, help="How many keys to make.")] = 1,
    threshold: Annotated[int, typer.Option(min=1, help="Signatures a release needs.")] = 1,
    storage: StorageOption = None,
    s3_endpoint_url: EndpointOption = None,
) -> None:
    """Give CHANNEL its own delegated role and keys (needs the targets key)."""
    from signing.channels import add_channel
    from signing.keys import RoleKeys

    with _clear_errors():
        paths = add_channel(
            repo,
            channel,
            keys=RoleKeys(keys, threshold),
            storage=_storage(storage, s3_endpoint_url),
            passphrase=_passphrase(),
        )
    typer.echo(
        f"channel {channel}: {threshold} of {keys} signatures; keys {', '.join(map(str, paths))}"
    )


@keys_app.command("rotate")
def keys_rotate(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot, timestamp or a channel.")],
    repo: RepoOption,
    revoke: Annotated[
        str | None, typer.Option("--revoke", help="Key id (or 8+ char prefix) to replace.")
    ] = None,
    to_uri: Annotated[
        str | None,
        typer.Option("--to-uri", help="Use an HSM or KMS key: hsm:2?label=TOKEN, awskms:KEY."),
    ] = None,
    storage: StorageOption = None,
    s3_endpoint_url: EndpointOption = None,
) -> None:
    """Replace one of ROLE's keys with a fresh one (or an HSM/KMS key); the old one is revoked."""
    from signing.rotation import rotate_key

    with _clear_errors():
        done = rotate_key(
            repo,
            role,
            revoke=revoke,
            to_uri=to_uri,
            storage=_storage(storage, s3_endpoint_url),
            passphrase=_passphrase(),
        )
    typer.echo(
        f"{role}: revoked {done.revoked[:12]}, added {done.added[:12]} ({done.key_file}); "
        f"wrote {', '.join(done.written)}"
    )


@release_app.command("publish")
def release_publish(
    image: Annotated[Path, typer.Argument(help="The ROM image to sign and publish.")],
    repo: RepoOption,
    version: Annotated[str, typer.Option("--version", help="Release version, e.g. 2026.48.")],
    channel: Annotated[str, typer.Option("--channel", help="Channel, e.g. stable or preview.")],
    model: Annotated[str, typer.Option("--model", help="Device model, e.g. rpi4.")],
    notes: Annotated[
        Path | None, typer.Option("--notes", help="File with the release notes.")
    ] = None,
    hardware_id: Annotated[
        list[str] | None,
        typer.Option("--hardware-id", help="Hardware id the image fits (repeatable)."),
    ] = None,
    storage: StorageOption = None,
    s3_endpoint_url: EndpointOption = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server", envvar="OTA_SERVER_URL", help="Tell this update server about the release."
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", envvar="OTA_TOKEN", help="Token for --server.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the release as JSON.")] = False,
    stage: Annotated[
        bool,
        typer.Option("--stage", help="Sign, but wait for more signatures (`ota release sign`)."),
    ] = False,
    new_channel: Annotated[
        bool, typer.Option("--new-channel", help="Create --channel if the repo lacks it.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and hash; show what would be signed.")
    ] = False,
    delta_from: Annotated[
        list[str] | None,
        typer.Option(
            "--delta-from",
            help="Also publish a delta from this earlier version (repeatable). Default: from"
            " the newest release of this channel and model, when its image is stored.",
        ),
    ] = None,
    no_delta: Annotated[
        bool, typer.Option("--no-delta", help="Publish no delta, not even the default one.")
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bars for hashing, signing and uploading, on stderr (default: when"
            " stderr is a terminal and --json is not given).",
        ),
    ] = None,
) -> None:
    """Sign IMAGE as a release and make it live (timestamp.json is written last).

    With --server, the server and the token are checked first: nothing is signed (and no
    version is used up) if either is wrong."""
    from signing.repo import publish_release

    if server and not token:
        raise typer.BadParameter("--server needs --token", param_hint="--token")
    if server and token:
        _check_server(server, token)
    with _clear_errors(), _progress_bars(progress, as_json) as bars:
        release = publish_release(
            repo,
            image,
            version=version,
            channel=channel,
            model=model,
            notes=_read_notes(notes),
            hardware_ids=hardware_id or None,
            storage=_storage(storage, s3_endpoint_url),
            passphrase=_passphrase(),
            stage=stage,
            new_channel=new_channel,
            dry_run=dry_run,
            delta_from=[] if no_delta else delta_from or None,
            progress=bars,
        )
    if dry_run:
        typer.echo(f"dry run, nothing signed: would publish {_describe(release)}")
        return
    if stage:
        typer.echo(
            f"staged {release.target_path}: not live until `ota release sign` meets the threshold"
        )
        return
    _show(release, as_json)
    if not as_json:
        _show_deltas(repo, storage, s3_endpoint_url, release)
    if server and token:
        _notify(server, token, release)


@contextmanager
def _progress_bars(wanted: bool | None, as_json: bool) -> Iterator[Progress | None]:
    """Rich progress bars on stderr, if `wanted` (--progress/--no-progress) or, by default,
    when stderr is a terminal and stdout is not for --json; stdout never gets any."""
    if not (wanted if wanted is not None else sys.stderr.isatty() and not as_json):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    columns = (
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[size]}"),
    )
    with Progress(*columns, console=Console(stderr=True)) as bars:
        yield _Tasks(bars)


class _Tasks:
    """`signing.progress.Progress` drawn by rich: one bar a task, its size if in bytes."""

    def __init__(self, bars: Bars) -> None:
        self._bars = bars

    def task(self, description: str, total: int, unit: str = BYTES) -> Advance:
        from rich.filesize import decimal

        size = decimal(total) if unit == BYTES else ""
        task_id = self._bars.add_task(description, total=total, size=size)
        return lambda done: self._bars.advance(task_id, done)


def _show_deltas(
    repo: Path, storage: str | None, endpoint: str | None, release: PublishedRelease
) -> None:
    from signing.repo import list_deltas

    with _clear_errors():
        deltas = list_deltas(repo, storage=_storage(storage, endpoint))
    for delta in deltas:
        if delta.custom.target_path == release.target_path:
            typer.echo(
                f"  delta from {delta.custom.source_version}: {delta.path}, {delta.length} bytes"
            )


def _read_notes(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PublishError(f"cannot read release notes {path}: {exc}") from None


def _show(release: PublishedRelease, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(release.to_dict(), sort_keys=True))
        return
    typer.echo(f"published {_describe(release)}")


def _describe(release: PublishedRelease) -> str:
    return (
        f"{release.model}/{release.channel} {release.version} "
        f"(release #{release.release_counter}) as {release.target_path}, "
        f"{release.length} bytes, sha256 {release.sha256}"
    )


def _check_server(server: str, token: str) -> None:
    from signing.notify import check_publisher

    try:
        check_publisher(server, token)
    except NotifyError as exc:
        raise _fail(f"nothing signed: {exc}") from None


def _notify(server: str, token: str, release: PublishedRelease) -> None:
    from signing.notify import notify_server

    try:
        notify_server(server, token, release)
    except NotifyError as exc:
        raise _fail(
            f"release {release.version} IS published and signed, but the server was not told: "
            f"{exc}. Tell it later with `ota release notify`."
        ) from None
    typer.echo(f"server {server} notified", err=True)


@release_app.command("sign")
def release_sign(
    repo: RepoOption,
    key: Annotated[Path, typer.Option("--key", help="Your private key file (PEM).")],
    role: Annotated[
        str | None, typer.Option("--role", help="Which pending role, if several wait.")
    ] = None,
    storage: StorageOption = None,
    s3_endpoint_url: EndpointOption = None,
) -> None:
    """Add your signature to a staged release; it goes live when the threshold is met."""
    from signing.keys import default_storage
    from signing.staging import sign_staged

    with _clear_errors():
        store = _storage(storage, s3_endpoint_url) or default_storage(repo)
        outcome = sign_staged(repo, key, storage=store, role=role, passphrase=_passphrase())
    what = f"{outcome.role} version {outcome.version}"
    typer.echo(f"signed {what}: {outcome.signed} of {outcome.threshold} signatures")
    if outcome.live:
        typer.echo(f"live: {', '.join(outcome.new_targets) or what}")
    else:
        typer.echo(f"waiting for {outcome.threshold - outcome.signed} more")


@release_app.command("notify")
def release_notify(
    repo: RepoOption,
    version: Annotated[str, typer.Option("--version", help="Release version.")],
    channel: Annotated[str, typer.Option("--channel", help="Channel.")],
    model: Annotated[str, typer.Option("--model", help="Device model.")],
    server: Annotated[
        str, typer.Option("--server", envvar="OTA_SERVER_URL", help="Update server URL.")
    ],
    token: Annotated[
        str, typer.Option("--token", envvar="OTA_TOKEN", help="A release engineer's token.")
    ],
    storage: StorageOption = None,
    s3_endpoint_url: EndpointOption = None,
) -> None:
    """Tell the server about an already published release (after a failed --server)."""
    from signing.repo import list_releases

    with _clear_errors():
        releases = list_releases(repo, storage=_storage(storage, s3_endpoint_url))
    wanted = (version, channel, model)
    matches = [r for r in releases if (r.version, r.channel, r.model) == wanted]
    if not matches:
        raise _fail(f"no published release {version} for {model} on {channel}")
    _notify(server, token, matches[0])


@release_app.command("list")
def release_list(
    repo: RepoOption,
    storage: StorageOption = None,
    s3_endpoint_url: EndpointOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
) -> None:
    """List the releases in the live signed metadata."""
    from signing.repo import list_releases

    with _clear_errors():
        releases = list_releases(repo, storage=_storage(storage, s3_endpoint_url))
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in releases], indent=2, sort_keys=True))
        return
    typer.echo("\n".join(f"{_describe(r)}" for r in releases) or "no releases")


@release_app.command("renew")
def release_renew(
    repo: RepoOption,
    storage: StorageOption = None,
    s3_endpoint_url: EndpointOption = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Also re-sign targets when due (needs its key).")
    ] = False,
) -> None:
    """Re-sign the metadata that is about to expire (run daily; timestamp key suffices)."""
    from signing.renew import renew_metadata

    with _clear_errors():
        written = renew_metadata(
            repo,
            storage=_storage(storage, s3_endpoint_url),
            passphrase=_passphrase(),
            offline=offline,
        )
    typer.echo(f"renewed {', '.join(written)}")


repo_app = typer.Typer(
    help="Inspect the signed repository.", no_args_is_help=True, pretty_exceptions_enable=False
)


@repo_app.callback()
def _repo_group() -> None:
    """Inspect the signed repository."""


@repo_app.command("status")
def repo_status_command(
    repo: RepoOption,
    storage: StorageOption = None,
    s3_endpoint_url: EndpointOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Every role's version, expiry, threshold and keys; exit 1 if anything has expired."""
    from signing.keys import default_storage
    from signing.status import repo_status

    with _clear_errors():
        store = _storage(storage, s3_endpoint_url) or default_storage(repo)
        statuses = repo_status(store)
    if as_json:
        roles = [{**s.to_dict(), "expires_in_s": _seconds_left(s.expires)} for s in statuses]
        typer.echo(json.dumps({"roles": roles}, sort_keys=True))
    else:
        for status in statuses:
            typer.echo(_status_line(status))
    for status in statuses:
        if status.problem:
            typer.echo(
                f"ota: {'error' if status.problem == 'expired' else 'warning'}: {status.message}",
                err=True,
            )
    if any(s.problem == "expired" for s in statuses):
        raise typer.Exit(code=1)


def _status_line(status: RoleStatus) -> str:
    keys = ", ".join(k[:12] for k in status.keyids)
    mark = {"expired": "  EXPIRED", "warning": "  WARNING"}.get(status.problem, "")
    return (
        f"{status.role:<12} v{status.version:<4} expires {status.expires:%Y-%m-%dT%H:%MZ} "
        f"({time_left(status.expires)})  "
        f"threshold {status.threshold}/{len(status.keyids)}  keys {keys}{mark}"
    )


def _seconds_left(expires: datetime) -> int:
    return int((expires - datetime.now(UTC)).total_seconds())


def time_left(expires: datetime, now: datetime | None = None) -> str:
    """ "in 23h 59m", "in 364d 23h", or "expired 2h 5m ago"."""
    seconds = int((expires - (now or datetime.now(UTC))).total_seconds())  # negative: past
    days, rest = divmod(abs(seconds), 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    span = f"{days}d {hours}h" if days else f"{hours}h {minutes}m"
    return f"in {span}" if seconds > 0 else f"expired {span} ago"
