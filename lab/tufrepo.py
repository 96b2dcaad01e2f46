"""Small signed TUF repositories for the agent's tests, and a loopback HTTP server for them.

`TufRepo` builds a repository with python-tuf's Metadata API (not with `signing/`, so the
agent's tests stand on their own): consistent snapshots on, metadata written as
`N.root.json`, `N.targets.json`, `N.snapshot.json` and `timestamp.json`, targets stored as
`targets/<dir>/<sha256>.<basename>`, the ROM fields (`wire.TargetCustom`) in each
target's `custom`.

`RepoServer` serves a directory over HTTP on 127.0.0.1 with `Range: bytes=N-` support, counts
the body bytes it sent per path, and injects faults on request (dropped connections, extra
bytes, ignored ranges, a trickle of targets or of metadata too).
"""

from __future__ import annotations

import hashlib
import io
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from securesystemslib.signer import CryptoSigner, Signer  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from agent.tuf_client import TufClient
from wire import TargetCustom

TOP_LEVEL_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
_PIECE = 64 * 1024


def rom_custom(
    *,
    version: str,
    model: str,
    hardware_ids: list[str] | None = None,
    chunk_size: int | None = None,
    chunk_sha256: list[str] | None = None,
) -> dict[str, Any]:
    """The signed `custom` object of a ROM target."""
    return TargetCustom(
        version=version,
        channel="stable",
        model=model,
        hardware_ids=tuple(hardware_ids or [model]),
        chunk_size=chunk_size,
        chunk_sha256=tuple(chunk_sha256 or []),
    ).to_custom()


def chunked_rom(data: bytes, chunk_size: int, *, version: str, model: str) -> dict[str, Any]:
    """`rom_custom` with the chunk hashes of `data`."""
    hashes = chunk_hashes(io.BytesIO(data), chunk_size)
    return rom_custom(version=version, model=model, chunk_size=chunk_size, chunk_sha256=hashes)


def chunk_hashes(source: BinaryIO, chunk_size: int) -> list[str]:
    """sha256 of each `chunk_size` piece of `source` (read from its start)."""
    source.seek(0)
    digests = []
    while data := source.read(chunk_size):
        digests.append(hashlib.sha256(data).hexdigest())
    return digests


class TufRepo:
    """A repository in `base/metadata` and `base/targets`, signed with fresh ed25519 keys."""

    def __init__(self, base: Path, *, expires_in: timedelta = timedelta(days=7)) -> None:
        self.base = base
        self.metadata_dir = base / "metadata"
        self.targets_dir = base / "targets"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        expires = datetime.now(UTC).replace(microsecond=0) + expires_in
        self.signers: dict[str, Signer] = {
            role: CryptoSigner.generate_ed25519() for role in TOP_LEVEL_ROLES
        }
        root = Root(expires=expires, consistent_snapshot=True)
        for role, signer in self.signers.items():
            root.add_key(signer.public_key, role)
        self.root = Metadata(root)
        self.targets = Metadata(Targets(expires=expires))
        self.snapshot = Metadata(Snapshot(expires=expires))
        self.timestamp = Metadata(Timestamp(expires=expires))
        self.delegated: dict[str, Metadata[Targets]] = {}
        self._expires = expires
        self._write_all()

    # ------------------------------------------------------------------ reading

    def root_bytes(self) -> bytes:
        """The current root, as a device would have it provisioned."""
        return (self.metadata_dir / f"{self.root.signed.version}.root.json").read_bytes()

    def target_file(self, path: str) -> Path:
        """Where the bytes of target `path` are stored (hash-prefixed name)."""
        roles = [self.targets, *self.delegated.values()]
        info = next(md.signed.targets[path] for md in roles if path in md.signed.targets)
        dirname, _, basename = path.rpartition("/")
        return self.targets_dir / dirname / f"{info.hashes['sha256']}.{basename}"

    # ------------------------------------------------------------------ changing

    def add_target(
        self,
        path: str,
        data: bytes,
        custom: dict[str, Any] | None = None,
        *,
        role: str = Targets.type,
    ) -> None:
        """Store `data` as target `path` of `role` (not yet published)."""
        self._store(role, path, data, len(data), hashlib.sha256(data).hexdigest(), custom)

    def add_target_file(
        self, path: str, source: Path, custom: dict[str, Any] | None = None
    ) -> None:
        """Like `add_target` for a large file: hashed and copied in pieces."""
        with source.open("rb") as src:
            digest = hashlib.file_digest(src, "sha256").hexdigest()
        self._store(Targets.type, path, source, source.stat().st_size, digest, custom)

    def delegate(self, role: str, paths: list[str]) -> None:
        """Delegate `paths` from targets to a new role `role` with its own key."""
        signer = self.signers[role] = CryptoSigner.generate_ed25519()
        if self.targets.signed.delegations is None:
            self.targets.signed.delegations = Delegations(keys={}, roles={})
        assert self.targets.signed.delegations.roles is not None
        self.targets.signed.delegations.roles[role] = DelegatedRole(role, [], 1, False, paths)
        self.targets.signed.add_key(signer.public_key, role)
        self.delegated[role] = Metadata(Targets(expires=self._expires))

    def publish(self) -> None:
        """Bump every targets role, snapshot and timestamp, sign and write them."""
        roles: list[Metadata[Any]] = [self.targets, *self.delegated.values()]
        for md in (*roles, self.snapshot, self.timestamp):
            md.signed.version += 1
        self._write_all()

    def expire_timestamp(self) -> None:
        """Publish a new timestamp that expired yesterday."""
        self.timestamp.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        self.timestamp.signed.version += 1
        self._write(self.timestamp, Timestamp.type, "timestamp.json")

    # ------------------------------------------------------------------ internals

    def _store(
        self,
        role: str,
        path: str,
        data: bytes | Path,
        length: int,
        sha256: str,
        custom: dict[str, Any] | None,
    ) -> None:
        fields = {} if custom is None else {"custom": custom}
        owner = self.targets if role == Targets.type else self.delegated[role]
        owner.signed.targets[path] = TargetFile(length, {"sha256": sha256}, path, fields)
        dest = self.target_file(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            with data.open("rb") as src, dest.open("wb") as out:
                while piece := src.read(_PIECE):
                    out.write(piece)
        else:
            dest.write_bytes(data)

    def _write_all(self) -> None:
        self._write(self.root, Root.type, f"{self.root.signed.version}.root.json")
        for role, md in [(Targets.type, self.targets), *self.delegated.items()]:
            self._write(md, role, f"{md.signed.version}.{quote(role, '')}.json")
            self.snapshot.signed.meta[f"{role}.json"] = MetaFile(md.signed.version)
        self._write(self.snapshot, Snapshot.type, f"{self.snapshot.signed.version}.snapshot.json")
        self.timestamp.signed.snapshot_meta = MetaFile(self.snapshot.signed.version)
        self._write(self.timestamp, Timestamp.type, "timestamp.json")

    def _write(self, md: Metadata[Any], role: str, filename: str) -> None:
        md.signatures.clear()
        md.sign(self.signers[role])
        (self.metadata_dir / filename).write_bytes(md.to_bytes(JSONSerializer(compact=False)))


# --------------------------------------------------------------------------- the server


@dataclass
class Faults:
    """What the server does wrong, and what it did. Shared by all handler threads."""

    drops: list[int] = field(default_factory=list)  # next target answers: cut after N bytes
    extra_bytes: int = 0  # append this much junk to every target body
    ignore_range: bool = False  # answer ranged requests with 200 and the whole file
    trickle: float = 0.0  # seconds between 16-byte pieces of a target body
    trickle_metadata: bool = False  # trickle metadata bodies too (slow retrieval of metadata)
    served: Counter[str] = field(default_factory=Counter)  # body bytes sent per URL path
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_drop(self) -> int | None:
        with self.lock:
            return self.drops.pop(0) if self.drops else None

    def target_bytes(self) -> int:
        return sum(n for path, n in self.served.items() if path.startswith("/targets/"))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        faults = self.server.faults
        with faults.lock:
            faults.requests.append((self.path, self.headers.get("Range", "")))
        file = self.server.root / self.path.lstrip("/")
        if ".." in self.path or not file.is_file():
            self._answer_empty(404)
            return
        is_target = self.path.startswith("/targets/")
        start = self._range_start(file.stat().st_size)
        if start is None:
            self._answer_empty(416)
            return
        self._send_body(file, start, is_target)

    def _range_start(self, size: int) -> int | None:
        header = self.headers.get("Range", "")
        if not header or self.server.faults.ignore_range:
            return 0
        first = int(header.removeprefix("bytes=").split("-")[0])
        return first if first < size else None

    def _send_body(self, file: Path, start: int, is_target: bool) -> None:
        faults = self.server.faults
        size = file.stat().st_size
        extra = faults.extra_bytes if is_target else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start + extra))
        self.end_headers()
        cut = faults.next_drop() if is_target else None
        sent = self._copy(file, start, cut, is_target)
        if cut is None and extra:
            sent += self._write(b"\0" * extra, is_target)
        with faults.lock:
            faults.served[self.path] += sent
        if cut is not None:
            self.close_connection = True

    def _copy(self, file: Path, start: int, cut: int | None, is_target: bool) -> int:
        sent = 0
        with file.open("rb") as src:
            src.seek(start)
            while piece := src.read(_PIECE if cut is None else min(_PIECE, cut - sent)):
                sent += self._write(piece, is_target)
        return sent

    def _write(self, data: bytes, is_target: bool) -> int:
        faults = self.server.faults
        trickle = faults.trickle if is_target or faults.trickle_metadata else 0.0
        if not trickle:
            self.wfile.write(data)
            return len(data)
        for i in range(0, len(data), 16):
            self.wfile.write(data[i : i + 16])
            self.wfile.flush()
            threading.Event().wait(trickle)
        return len(data)

    def _answer_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.faults = faults

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-body (a failed check, a test) is normal here."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            super().handle_error(request, client_address)


class RepoServer:
    """Serve `root` on a free loopback port until `close()` (or the end of a `with`)."""

    def __init__(self, root: Path) -> None:
        self.faults = Faults()
        self._server = _Server(root, self.faults)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/metadata/"

    @property
    def targets_url(self) -> str:
        return f"{self.url}/targets/"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RepoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(root: Path) -> Iterator[RepoServer]:
    """For fixtures: `yield from serve(path)`."""
    with RepoServer(root) as server:
        yield server


def device_client(
    metadata_dir: Path, repo: TufRepo, server: RepoServer, *, bootstrap: bool = True
) -> TufClient:
    """A device's TufClient for `repo` as `server` serves it (provisioned with its root)."""
    return TufClient(
        metadata_dir,
        server.metadata_url,
        server.targets_url,
        bootstrap_root=repo.root_bytes() if bootstrap else None,
    )
