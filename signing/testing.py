"""Test helpers shipped with the package: a storage that fails on cue, a loopback HTTP server
for a repository folder, and a real python-tuf client to check what devices would see."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.ngclient import Updater  # type: ignore[attr-defined]

from signing.errors import StorageError
from signing.storage import Storage


class InjectedFaultError(StorageError):
    """The failure FaultyStorage raises on cue."""


def _raise_fault(name: str) -> None:
    raise InjectedFaultError(f"injected failure before writing {name}")


@dataclass
class FaultyStorage:
    """Wraps a real Storage; lets `allowed_writes` writes through, then calls `on_fault` (which
    raises InjectedFaultError by default, or may end the process) instead of the next write."""

    inner: Storage
    allowed_writes: int
    on_fault: Callable[[str], None] = _raise_fault
    written: list[str] = field(default_factory=list)

    def _gate(self, name: str) -> None:
        if len(self.written) >= self.allowed_writes:
            self.on_fault(name)
        self.written.append(name)

    def put_file(
        self, name: str, path: Path, progress: Callable[[int], None] | None = None
    ) -> None:
        self._gate(name)
        self.inner.put_file(name, path, progress)

    def put_bytes(self, name: str, data: bytes) -> None:
        self._gate(name)
        self.inner.put_bytes(name, data)

    def get_bytes(self, name: str) -> bytes | None:
        return self.inner.get_bytes(name)

    def get_file(self, name: str, dest: Path) -> bool:
        return self.inner.get_file(name, dest)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve `root` read-only over HTTP on a free loopback port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class TufClient:
    """A device's view of a repository: python-tuf's ngclient with a persistent cache."""

    workdir: Path
    base_url: str  # serves metadata/ and targets/
    trusted_root: bytes

    def updater(self) -> Updater:
        metadata_dir = self.workdir / "metadata"
        targets_dir = self.workdir / "downloads"
        metadata_dir.mkdir(parents=True, exist_ok=True)
        targets_dir.mkdir(parents=True, exist_ok=True)
        return Updater(
            metadata_dir=str(metadata_dir),
            metadata_base_url=f"{self.base_url}/metadata/",
            target_dir=str(targets_dir),
            target_base_url=f"{self.base_url}/targets/",
            bootstrap=self.trusted_root,
        )

    def refresh(self) -> Updater:
        updater = self.updater()
        updater.refresh()
        return updater

    def fetch(self, target_path: str) -> tuple[Any, bytes]:
        """Refresh, then download and verify `target_path`: (its TargetFile, its bytes)."""
        updater = self.refresh()
        info = updater.get_targetinfo(target_path)
        if info is None:
            raise LookupError(f"{target_path} is not in the signed targets")
        path = updater.download_target(info)
        return info, Path(path).read_bytes()


def write_image(path: Path, size: int, seed: int = 0) -> Path:
    """A deterministic stand-in ROM image of `size` bytes (written in pieces, not held)."""
    import random

    rng = random.Random(seed)  # noqa: S311  # seeded test data, guards nothing
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as image:
        left = size
        while left:
            piece = min(left, 1024 * 1024)
            image.write(rng.randbytes(piece))
            left -= piece
    return path


def snapshot_tree(root: Path) -> dict[str, bytes]:
    """Every file below `root` by relative path, for byte-for-byte comparisons."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
