"""Install from a delta when one fits, else say why and leave the slot to the full image.

A delta is a signed target beside the full image (`wire.delta_target_name`) whose signed
`wire.DeltaCustom` names the source build and the full target it makes. It is taken only when
it was signed by the same role as the full target, names exactly that target (path, sha256,
length), starts from the running version, and the running slot holds the source image: its
first `source_length` bytes hash to `source_sha256`. The slot is hashed rather than trusting
what the journal says was installed there: a factory image, or a slot that was once mounted
read-write, has no record or differs from it, and a delta applied to another source is wasted.

Order: the patch is downloaded into `workdir` (verified against its signed length and hash,
resumed across dropped connections like a full image; kept and re-verified after a reboot),
then applied as a stream (`romdelta.apply`) from the running slot into the target slot, every
byte written going through the full image's `StreamVerifier` (chunk hashes, then the whole
image's hashes). The slot is unbootable all along; the caller arms it only after this
returned. Any failure raises; the caller falls back to the full image.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.download import StreamVerifier, download_into, verify_stored
from agent.errors import InstallError, VerificationError
from agent.fetcher import RangeFetcher
from agent.tuf_client import TargetInfo, TufClient
from hardware.blockdev import FileSlot
from hardware.bootcontrol import BootControl, Slot, SlotReader, SlotSink
from romdelta.apply import apply_patch
from romdelta.format import PatchError
from wire import DeltaCustom, FailureReason, ProtocolError, delta_target_name

log = logging.getLogger(__name__)

_HASH_PIECE = 1024 * 1024


@dataclass(frozen=True)
class Delta:
    """A signed delta that fits the running slot."""

    info: TargetInfo
    custom: DeltaCustom


@dataclass
class DeltaInstaller:
    """Finds, fetches and applies deltas for one device (`AgentParts.delta_dir` enables it)."""

    tuf: TufClient
    fetcher: RangeFetcher
    boot: BootControl
    workdir: Path

    def find(self, full: TargetInfo, running_version: str) -> Delta | None:
        """The delta from `running_version` to `full` when one is published and the running
        slot holds its source; None when there is none to try (none signed, or a backend
        that cannot read a slot). Raises VerificationError for a delta that does not fit."""
        if not running_version or not isinstance(self.boot, SlotReader):
            return None
        info = self._signed_delta(full, running_version)
        if info is None:
            return None
        custom = _delta_custom(info)
        check_delta(info, custom, full, running_version)
        self._check_source(self.boot, custom)
        return Delta(info, custom)

    def install(
        self, delta: Delta, full: TargetInfo, sink: SlotSink, keep_going: Callable[[], bool]
    ) -> None:
        """Fetch the patch and write the full image into `sink` from it, verified."""
        patch = self._fetch_patch(delta.info, keep_going)
        try:
            self._apply(patch, full, sink)
        finally:
            patch.unlink(missing_ok=True)  # a retry fetches it again

    def _signed_delta(self, full: TargetInfo, running_version: str) -> TargetInfo | None:
        try:
            return self.tuf.get_target(delta_target_name(full.path, running_version))
        except ProtocolError:
            return None  # a running version no delta can be named after
        except VerificationError as exc:
            if exc.reason is FailureReason.TARGET_NOT_FOUND:
                return None
            raise

    def _check_source(self, reader: SlotReader, custom: DeltaCustom) -> None:
        active = self.boot.status().active
        if self.boot.slot_size(active) < custom.source_length:
            raise VerificationError("the running slot is smaller than the delta's source")
        if slot_sha256(reader, active, custom.source_length) != custom.source_sha256:
            raise VerificationError(
                f"the running slot does not hold {custom.source_version}, the delta's source",
                FailureReason.HASH_MISMATCH,
            )

    def _fetch_patch(self, info: TargetInfo, keep_going: Callable[[], bool]) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"{info.sha256}.delta"
        if path.exists() and _holds(path, info):
            return path  # downloaded before a reboot, still as signed
        with FileSlot(path.open("w+b")) as file:
            download_into(
                self.fetcher, self.tuf.target_url(info), info, file, keep_going=keep_going
            )
        return path

    def _apply(self, patch_path: Path, full: TargetInfo, sink: SlotSink) -> None:
        verifier = StreamVerifier(full)
        reader = self.boot
        if not isinstance(reader, SlotReader):
            raise InstallError("this boot backend cannot read the running slot")
        active = reader.status().active
        sink.seek(0)
        try:
            with patch_path.open("rb") as patch, reader.open_slot_for_read(active) as source:
                apply_patch(patch, source, _VerifyingSink(verifier, sink))
            verifier.finish()
            sink.flush()
            sink.fsync()
        except PatchError as exc:
            reason = FailureReason.HASH_MISMATCH
            raise VerificationError(f"delta does not apply: {exc}", reason) from None
        except OSError as exc:
            raise InstallError(f"cannot apply the delta: {exc}") from exc


def delta_installer(parts: _HasDeltaParts) -> DeltaInstaller | None:
    """The installer for an agent's parts; None when deltas are off (no `delta_dir`)."""
    if parts.delta_dir is None:
        return None
    return DeltaInstaller(parts.tuf, parts.fetcher, parts.boot, parts.delta_dir)


class _HasDeltaParts(Protocol):
    @property
    def tuf(self) -> TufClient: ...
    @property
    def fetcher(self) -> RangeFetcher: ...
    @property
    def boot(self) -> BootControl: ...
    @property
    def delta_dir(self) -> Path | None: ...


class _VerifyingSink:
    """Checks each piece against the full image's hashes, then writes it to the slot."""

    def __init__(self, verifier: StreamVerifier, sink: SlotSink) -> None:
        self._verifier = verifier
        self._sink = sink

    def write(self, data: bytes | memoryview, /) -> int:
        self._verifier.update(bytes(data))
        view = memoryview(data)
        while view:
            written = self._sink.write(view)
            if not written:
                raise OSError("the slot took no bytes")
            view = view[written:]
        return len(data)


def check_delta(info: TargetInfo, custom: DeltaCustom, full: TargetInfo, running: str) -> None:
    """Raise VerificationError unless the delta makes exactly `full` from `running`, and was
    signed by the role that signed `full`. Pure."""
    makes = (custom.target_path, custom.target_sha256, custom.target_length)
    if makes != (full.path, full.sha256, full.length):
        raise VerificationError(f"{info.path} does not make {full.path} as signed")
    if custom.source_version != running:
        raise VerificationError(f"{info.path} starts from {custom.source_version}, not {running}")
    if not info.delegated_by or info.delegated_by != full.delegated_by:
        raise VerificationError(
            f"{info.path} came through role {info.delegated_by!r}, not {full.delegated_by!r}",
            FailureReason.WRONG_CHANNEL,
        )


def slot_sha256(reader: SlotReader, slot: Slot, length: int) -> str:
    """sha256 of the first `length` bytes of `slot`."""
    digest = hashlib.sha256()
    with reader.open_slot_for_read(slot) as source:
        left = length
        while left > 0 and (piece := source.read(min(_HASH_PIECE, left))):
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def _delta_custom(info: TargetInfo) -> DeltaCustom:
    try:
        return DeltaCustom.from_custom(info.custom)
    except ProtocolError as exc:
        raise VerificationError(f"{info.path}: {exc}") from None


def _holds(path: Path, info: TargetInfo) -> bool:
    try:
        with path.open("rb") as file:
            verify_stored(file, info)
    except (VerificationError, InstallError, OSError):
        return False
    return True
