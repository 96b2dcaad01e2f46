"""The TUF conformance client (`ota-agent tuf-client ...`), on the code devices run.

Implements tuf-conformance's CLIENT-CLI protocol:

    --metadata-dir D init TRUSTED_ROOT
    --metadata-dir D --metadata-url U refresh
    --metadata-dir D --metadata-url U --target-name T [--target-name T2 ...]
        --target-base-url B --target-dir TD download

Exit 0 on success, 1 on any failure. Trusted metadata lives in D under non-versioned names
(`root.json`, `timestamp.json`, ...: the exact bytes received, delegated role names
URL-quoted) as python-tuf keeps it. A target is stored in TD under its URL-quoted path; one
already there with matching length and hashes is not fetched again. Downloads go through
`agent.download` into a hidden temporary file that replaces the stored one only once it
verified (`durable.atomic_write_stream`), so a failed download leaves TD as it was.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, NoReturn
from urllib import parse

import durable
from agent.download import download_into, exponential_backoff, verify_stored
from agent.errors import AgentError, InstallError, VerificationError
from agent.fetcher import RangeFetcher, make_fetcher
from agent.tuf_client import TargetInfo, TufClient
from hardware.blockdev import FileSlot

PROG = "ota-agent tuf-client"
RETRIES = 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is exit code 1 like every other failure (not 2)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        _run(parser, args)
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except AgentError as exc:
        print(f"{PROG}: {exc.reason.value or 'error'}: {exc}", file=sys.stderr)
        return 1
    return 0


def _parser() -> _Parser:
    parser = _Parser(prog=PROG, description="TUF conformance client (CLIENT-CLI protocol)")
    parser.add_argument("--metadata-dir", type=Path, required=True)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name", action="append", default=[])
    parser.add_argument("--target-base-url")
    parser.add_argument("--target-dir", type=Path)
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="trust TRUSTED_ROOT (no network)")
    init.add_argument("trusted_root", type=Path)
    sub.add_parser("refresh", help="update the top-level metadata")
    sub.add_parser("download", help="refresh, then fetch and verify each --target-name")
    return parser


def _run(parser: _Parser, args: argparse.Namespace) -> None:
    if args.command == "init":
        init(args.metadata_dir, args.trusted_root)
        return
    if not args.metadata_url:
        parser.error(f"{args.command} needs --metadata-url")
    if args.command == "refresh":
        TufClient(args.metadata_dir, args.metadata_url, "").refresh()
        return
    if not (args.target_name and args.target_base_url and args.target_dir):
        parser.error("download needs --target-name, --target-base-url and --target-dir")
    fetcher = make_fetcher()
    client = TufClient(args.metadata_dir, args.metadata_url, args.target_base_url, fetcher=fetcher)
    for name in args.target_name:
        download(client, fetcher, name, args.target_dir)


def init(metadata_dir: Path, trusted_root: Path) -> None:
    """Trust `trusted_root` as it is: copied to `metadata_dir/root.json`, nothing fetched."""
    try:
        data = trusted_root.read_bytes()
        durable.ensure_dir(metadata_dir)
        durable.atomic_write(metadata_dir / "root.json", data)
    except OSError as exc:
        raise InstallError(f"init: {exc}") from exc


def download(client: TufClient, fetcher: RangeFetcher, name: str, target_dir: Path) -> Path:
    """Store target `name` in `target_dir` (refreshing metadata first) unless it is there."""
    info = client.get_target(name)
    dest = target_dir / parse.quote(info.path, "")
    if _already_stored(dest, info):
        return dest
    try:
        durable.ensure_dir(target_dir)
        _download_replacing(fetcher, client.target_url(info), info, dest)
    except OSError as exc:
        raise InstallError(f"cannot store {name} in {target_dir}: {exc}") from exc
    return dest


def _already_stored(dest: Path, info: TargetInfo) -> bool:
    try:
        with dest.open("rb") as stored:
            verify_stored(stored, info)
    except (OSError, VerificationError):
        return False
    return True


def _download_replacing(fetcher: RangeFetcher, url: str, info: TargetInfo, dest: Path) -> None:
    """Download next to `dest` and move it into place only once it verified."""

    def fetch_into(temp: BinaryIO) -> None:
        download_into(
            fetcher,
            url,
            info,
            FileSlot(temp),  # not closed here: durable syncs and renames the temp file
            retries=RETRIES,
            backoff=lambda attempt: exponential_backoff(attempt, base=0.2, cap=1.0),
        )

    durable.atomic_write_stream(dest, fetch_into, tag="target")


if __name__ == "__main__":
    sys.exit(main())
