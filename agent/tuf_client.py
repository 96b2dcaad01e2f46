"""The device's view of the TUF repository: what may be installed, and where to fetch it.

`TufClient` wraps python-tuf's `Updater` and is the one place where tuf's exceptions become
the agent's (`VerificationError(METADATA)`, `TransportError`). `check_target` is pure: it
decides whether a properly signed target fits this device (model, version, slot size).

The provisioned trusted root is handed to python-tuf as `bootstrap` on every refresh, so a
metadata cache that a power cut left half-written heals itself: python-tuf re-anchors on the
provisioned root and re-downloads whatever local file does not verify.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import (  # type: ignore[attr-defined]  # re-exported, no __all__
    Metadata,
    Root,
    TargetFile,
)
from tuf.api.serialization import DeserializationError
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from agent.errors import InstallError, TransportError, VerificationError
from agent.fetcher import make_fetcher
from agent.trusted_clock import TrustedClock
from wire import FailureReason, ProtocolError, TargetCustom
from wire.versions import InvalidVersionError, is_newer


@dataclass(frozen=True)
class TargetInfo:
    """One signed target: what TUF says about the bytes, plus the signed `custom` fields.

    `hashes` holds every algorithm the metadata lists, in its order (the first one names the
    file under consistent snapshots); `sha256` is the one ROM builds always carry.
    """

    path: str
    length: int
    sha256: str
    custom: dict[str, Any]
    hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_target_file(cls, target: TargetFile) -> TargetInfo:
        custom = target.custom if isinstance(target.custom, dict) else {}
        return cls(
            path=target.path,
            length=target.length,
            sha256=target.hashes.get("sha256", ""),
            custom=dict(custom),
            hashes=dict(target.hashes),
        )

    @property
    def all_hashes(self) -> dict[str, str]:
        """The hashes to check: all listed ones (or just `sha256` for a hand-made info)."""
        return dict(self.hashes) if self.hashes else {"sha256": self.sha256}

    @property
    def rom(self) -> TargetCustom | None:
        """The signed ROM fields, or None for a target that carries none (or malformed ones)."""
        try:
            return TargetCustom.from_custom(self.custom)
        except ProtocolError:
            return None

    @property
    def version(self) -> str:
        return self.rom.version if self.rom else ""

    @property
    def model(self) -> str:
        return self.rom.model if self.rom else ""

    @property
    def hardware_ids(self) -> tuple[str, ...]:
        return self.rom.models if self.rom else ()

    @property
    def chunk_size(self) -> int | None:
        return self.rom.chunk_size if self.rom else None

    @property
    def chunk_sha256(self) -> tuple[str, ...]:
        return self.rom.chunk_sha256 if self.rom else ()


def check_target(info: TargetInfo, *, model: str, current_version: str, slot_size: int) -> None:
    """Raise unless `info` may go into a slot of `slot_size` bytes on a `model` device
    running `current_version`. Pure: the metadata was verified before this is called."""
    if model not in info.hardware_ids:
        raise VerificationError(
            f"{info.path} is for {', '.join(info.hardware_ids) or 'no model'}, not {model}",
            FailureReason.WRONG_MODEL,
        )
    try:
        newer = is_newer(info.version, current_version)
    except InvalidVersionError as exc:
        raise VerificationError(
            f"{info.path}: cannot order versions: {exc}", FailureReason.DOWNGRADE
        ) from None
    if not newer:
        raise VerificationError(
            f"{info.path}: version {info.version!r} is not newer than {current_version!r}",
            FailureReason.DOWNGRADE,
        )
    if info.length > slot_size:
        raise InstallError(
            f"{info.path} is {info.length} bytes, the slot holds {slot_size}",
            FailureReason.SLOT_TOO_SMALL,
        )


class TufClient:
    """Refreshes TUF metadata into `metadata_dir` and answers target questions.

    `bootstrap_root` is the provisioned root (bytes); without it the cached `root.json` in
    `metadata_dir` is the trust anchor (the conformance client's `init` puts it there).
    """

    def __init__(
        self,
        metadata_dir: Path,
        metadata_url: str,
        targets_url: str,
        *,
        bootstrap_root: bytes | None = None,
        fetcher: FetcherInterface | None = None,
        config: UpdaterConfig | None = None,
        clock: TrustedClock | None = None,
    ) -> None:
        self.metadata_dir = Path(metadata_dir)
        self.clock = clock
        self.metadata_url = metadata_url
        self.targets_url = targets_url if targets_url.endswith("/") else f"{targets_url}/"
        self.fetcher: FetcherInterface = fetcher or make_fetcher()
        self._bootstrap = bootstrap_root
        self._config = config or UpdaterConfig()
        self._updater: Updater | None = None
        self._consistent_snapshot = True

    def refresh(self) -> None:
        """Bring the top-level metadata up to date (a fresh python-tuf workflow each time)."""
        self._updater = None
        with tuf_errors("refresh"):
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            updater = Updater(
                str(self.metadata_dir),
                self.metadata_url,
                fetcher=self.fetcher,
                config=self._config,
                bootstrap=self._bootstrap,
            )
            updater.refresh()
            self._consistent_snapshot = bool(self._trusted_root().consistent_snapshot)
        self._check_against_trusted_time()
        self._updater = updater

    def _check_against_trusted_time(self) -> None:
        """python-tuf checked expiry with the system clock; check again with the latest
        time this device knows to be true (a clock reset must not revive old metadata)."""
        if self.clock is None:
            return
        now = self.clock.now()
        for role in ("root", "timestamp", "snapshot", "targets"):
            path = self.metadata_dir / f"{role}.json"
            try:
                signed = Metadata.from_bytes(path.read_bytes()).signed
            except (OSError, DeserializationError) as exc:
                raise VerificationError(f"cannot re-read trusted {role}: {exc}") from None
            if signed.is_expired(now):
                raise VerificationError(
                    f"{role} metadata expired at {signed.expires.isoformat()}; the device's"
                    f" clock says earlier, but it has seen {now.isoformat()}"
                )
        self.clock.vouch()

    def get_target(self, path: str) -> TargetInfo:
        """The signed info of target `path` (refreshing first if this client has not)."""
        if self._updater is None:
            self.refresh()
        assert self._updater is not None
        with tuf_errors(f"look up {path}"):
            found = self._updater.get_targetinfo(path)
        if found is None:
            raise VerificationError(
                f"{path} is not a signed target", FailureReason.TARGET_NOT_FOUND
            )
        return TargetInfo.from_target_file(found)

    def target_url(self, info: TargetInfo) -> str:
        """Where the bytes of `info` live: `<dir>/<first hash>.<name>` under consistent
        snapshots, exactly as python-tuf's `Updater.download_target` builds it."""
        path = info.path
        if self._consistent_snapshot and self._config.prefix_targets_with_hash:
            digest = next(iter(info.all_hashes.values()))
            dirname, sep, basename = path.rpartition("/")
            path = f"{dirname}{sep}{digest}.{basename}"
        return f"{self.targets_url}{path}"

    def _trusted_root(self) -> Root:
        """The root python-tuf just verified and linked as `root.json`."""
        root: Root = Metadata[Root].from_file(str(self.metadata_dir / "root.json")).signed
        return root


@contextmanager
def tuf_errors(action: str) -> Iterator[None]:
    """The one boundary where python-tuf's (and the file system's) errors become ours."""
    try:
        yield
    except tuf_exceptions.DownloadLengthMismatchError as exc:
        raise VerificationError(f"{action}: metadata too long: {exc}") from exc
    except tuf_exceptions.DownloadError as exc:
        raise TransportError(f"{action}: {exc or type(exc).__name__}") from exc
    except tuf_exceptions.RepositoryError as exc:
        raise VerificationError(f"{action}: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InstallError(f"{action}: disk full", FailureReason.DISK_FULL) from exc
        raise VerificationError(f"{action}: metadata cache unusable: {exc}") from exc
