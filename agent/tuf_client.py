"""The device's view of the TUF repository: what may be installed, and where to fetch it.

`TufClient` wraps python-tuf's `Updater` and is the one place where tuf's exceptions become
the agent's (`VerificationError(METADATA)`, `TransportError`). `check_target` is pure: it
decides whether a properly signed target fits this device (model, channel, the role that
signed it, version, release counter, slot size).

Which role signed a target: python-tuf's `Updater.get_targetinfo` walks the delegations and
only trusts a role for the paths its delegation's patterns match, but it does not say where it
found the target. `delegating_role` answers that from the trusted top-level targets: the
top-level role itself when it lists the path, else the first delegation matching the path when
python-tuf's walk could not have gone past it (terminating, or the only match). signing/
delegates `*/<channel>/*/*` to one role per channel (`signing.delegation`), so a target a
stable device installs must come through the `stable` role: a preview key cannot sign a stable
build even by writing "stable" in the target's signed `custom` fields.

The provisioned trusted root is handed to python-tuf as `bootstrap` on every refresh, so a
metadata cache that a power cut left half-written heals itself: python-tuf re-anchors on the
provisioned root and re-downloads whatever local file does not verify.
"""

from __future__ import annotations

import errno
import logging
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
    Targets,
)
from tuf.api.serialization import DeserializationError
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from agent.errors import AgentError, InstallError, TransportError, VerificationError
from agent.fetcher import make_fetcher
from agent.installed import InstalledRelease
from agent.trusted_clock import TrustedClock
from wire import AndroidPayload, FailureReason, ProtocolError, TargetCustom, TrustedTimestamp
from wire.versions import InvalidVersionError, is_newer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetInfo:
    """One signed target: what TUF says about the bytes, plus the signed `custom` fields.

    `hashes` holds every algorithm the metadata lists, in its order (the first one names the
    file under consistent snapshots); `sha256` is the one ROM builds always carry.
    `delegated_by` names the role python-tuf found it through (`delegating_role`), "" when
    unknown (a hand-made info): no device installs that.
    """

    path: str
    length: int
    sha256: str
    custom: dict[str, Any]
    hashes: dict[str, str] = field(default_factory=dict)
    delegated_by: str = ""

    @classmethod
    def from_target_file(cls, target: TargetFile, *, delegated_by: str = "") -> TargetInfo:
        custom = target.custom if isinstance(target.custom, dict) else {}
        return cls(
            path=target.path,
            length=target.length,
            sha256=target.hashes.get("sha256", ""),
            custom=dict(custom),
            hashes=dict(target.hashes),
            delegated_by=delegated_by,
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

    @property
    def android_payload(self) -> AndroidPayload | None:
        return self.rom.android_payload if self.rom else None


def check_target(
    info: TargetInfo,
    *,
    model: str,
    channel: str,
    current_version: str,
    slot_size: int,
    installed: InstalledRelease | None = None,
) -> None:
    """Raise unless `info` may go into a slot of `slot_size` bytes on a `model` device that
    follows `channel` and runs `current_version` (signed as `installed`, when known).
    Pure: the metadata was verified before this is called."""
    if model not in info.hardware_ids:
        raise VerificationError(
            f"{info.path} is for {', '.join(info.hardware_ids) or 'no model'}, not {model}",
            FailureReason.WRONG_MODEL,
        )
    _check_channel(info, channel)
    _check_version(info, current_version)
    _check_release_counter(info, installed)
    if info.length > slot_size:
        raise InstallError(
            f"{info.path} is {info.length} bytes, the slot holds {slot_size}",
            FailureReason.SLOT_TOO_SMALL,
        )


def _check_channel(info: TargetInfo, channel: str) -> None:
    """Signed for `channel`, and by `channel`'s role (or by top-level targets itself)."""
    signed_for = info.rom.channel if info.rom else ""
    if signed_for != channel:
        raise VerificationError(
            f"{info.path} is signed for channel {signed_for or '(none)'!r}; this device"
            f" follows {channel!r}",
            FailureReason.WRONG_CHANNEL,
        )
    if info.delegated_by not in (Targets.type, channel):
        raise VerificationError(
            f"{info.path} came through role {info.delegated_by or '(unknown)'!r}, not the"
            f" {channel!r} channel's",
            FailureReason.WRONG_CHANNEL,
        )


def _check_version(info: TargetInfo, current_version: str) -> None:
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


def _check_release_counter(info: TargetInfo, installed: InstalledRelease | None) -> None:
    """The signed counter must go up within one channel+model; unknown or other: no check."""
    rom = info.rom
    if rom is None or installed is None or not installed.counted:
        return
    if installed.same_sequence(rom) and rom.release_counter <= installed.release_counter:
        raise VerificationError(
            f"{info.path}: release counter {rom.release_counter} is not above the running"
            f" build's {installed.release_counter} ({rom.channel}/{rom.model})",
            FailureReason.DOWNGRADE,
        )


def delegating_role(top: Targets, path: str) -> str:
    """The role python-tuf's search must have found `path` through, given the trusted
    top-level targets `top`; "" when the search could have gone on to other roles."""
    if path in top.targets:
        return Targets.type
    if top.delegations is None:
        return ""
    matches = list(top.delegations.get_roles_for_target(path))
    if not matches:
        return ""
    name, terminating = matches[0]
    return str(name) if terminating or len(matches) == 1 else ""


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
        expiries = []
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
            expiries.append(signed.expires)
        self.clock.vouch(not_after=min(expiries))

    def trusted_timestamp(self, *, refresh: bool = True) -> TrustedTimestamp | None:
        """The timestamp this device trusts, for the server's staleness view: refreshed first
        (so an idle device's trust moves with the repository; a failed refresh keeps the old
        one, which is the point: the server sees it age), None before any refresh worked."""
        if refresh:
            try:
                self.refresh()
            except AgentError as exc:
                log.info("metadata refresh for the poll failed: %s", exc)
        try:
            signed = Metadata.from_bytes((self.metadata_dir / "timestamp.json").read_bytes()).signed
        except (OSError, DeserializationError):
            return None
        return TrustedTimestamp(version=signed.version, expires=signed.expires.timestamp())

    def get_target(self, path: str) -> TargetInfo:
        """The signed info of target `path` (refreshing first if this client has not)."""
        if self._updater is None:
            self.refresh()
        if self._updater is None:  # refresh() sets it or raises
            raise RuntimeError("TUF client has no updater after a refresh")
        with tuf_errors(f"look up {path}"):
            found = self._updater.get_targetinfo(path)
        if found is None:
            raise VerificationError(
                f"{path} is not a signed target", FailureReason.TARGET_NOT_FOUND
            )
        return TargetInfo.from_target_file(found, delegated_by=delegating_role(self._top(), path))

    def target_url(self, info: TargetInfo) -> str:
        """Where the bytes of `info` live: `<dir>/<first hash>.<name>` under consistent
        snapshots, exactly as python-tuf's `Updater.download_target` builds it."""
        path = info.path
        if self._consistent_snapshot and self._config.prefix_targets_with_hash:
            digest = next(iter(info.all_hashes.values()))
            dirname, sep, basename = path.rpartition("/")
            path = f"{dirname}{sep}{digest}.{basename}"
        return f"{self.targets_url}{path}"

    def _top(self) -> Targets:
        """The top-level targets python-tuf verified in this refresh (it links `targets.json`)."""
        with tuf_errors("re-read trusted targets"):
            path = self.metadata_dir / f"{Targets.type}.json"
            top: Targets = Metadata[Targets].from_file(str(path)).signed
        return top

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
