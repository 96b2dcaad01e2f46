"""Installing through a platform that writes the slot itself (Android's update_engine).

TUF verifies bytes, update_engine applies them; nothing reaches update_engine that TUF did
not verify. The whole signed target (the OTA package) is downloaded into the backend's
staging file with the same one-pass, chunk-resumable, hash-checked download as a slot, and
fsynced; only then is update_engine handed a `file://` URL of that file and the payload's
signed byte range and properties (`wire.AndroidPayload`, signed with the target). See
docs/decisions/0019-android-payload-from-a-verified-file.md.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from agent.download import download_into
from agent.errors import InstallError, VerificationError
from agent.fetcher import RangeFetcher
from agent.progress import PROGRESS_EVERY_S, DownloadProgress
from agent.tuf_client import TargetInfo
from hardware.blockdev import FileSlot
from hardware.bootcontrol import PayloadApplier
from wire import AndroidPayload, FailureReason

log = logging.getLogger("agent.runner")


def signed_payload(info: TargetInfo) -> AndroidPayload:
    """The payload range and properties the target's signed fields give; refuses a target
    that is not an Android OTA package or whose payload lies outside the signed bytes."""
    payload = info.android_payload
    if payload is None:
        raise VerificationError(
            f"{info.path} is not an Android OTA package (its signed fields name no payload); "
            "this device installs through update_engine",
            FailureReason.WRONG_MODEL,
        )
    if payload.offset + payload.size > info.length:
        raise VerificationError(
            f"{info.path}: the signed payload range ends past the target's {info.length} bytes",
            FailureReason.LENGTH_MISMATCH,
        )
    return payload


def install_payload(
    boot: PayloadApplier,
    fetcher: RangeFetcher,
    url: str,
    info: TargetInfo,
    *,
    device_id: str,
    keep_going: Callable[[], bool],
) -> None:
    """Download and verify the target into the staging file, then have the platform apply
    the payload inside it. The staging file goes once this ends (it is kept only across a
    power cut, where a later attempt resumes it chunk by chunk)."""
    payload = signed_payload(info)
    staged = boot.staging_path()
    try:
        with _open_staging(staged, info.length) as sink:
            download_into(
                fetcher,
                url,
                info,
                sink,
                resume_from=info.length if info.chunk_sha256 else 0,
                keep_going=keep_going,
                progress=DownloadProgress(device_id, info.path, info.length),
            )
        log.info(
            "%s: verified %s (%d bytes); update_engine applies its payload",
            *(device_id, info.path, info.length),
        )
        boot.apply_payload(
            staged.resolve().as_uri(),
            payload.offset,
            payload.size,
            list(payload.properties),
            ApplyProgress(device_id),
        )
    except Exception:  # not a power cut: nothing would resume this file
        staged.unlink(missing_ok=True)
        raise
    staged.unlink(missing_ok=True)


def _open_staging(path: Path, length: int) -> FileSlot:
    """The staging file, `length` bytes long (what an earlier attempt wrote is kept)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, length)
    except OSError as exc:
        reason = FailureReason.DISK_FULL if exc.errno == errno.ENOSPC else FailureReason.INTERNAL
        raise InstallError(f"cannot make the staging file {path}: {exc.strerror}", reason) from None
    return FileSlot(os.fdopen(fd, "r+b"))


class ApplyProgress:
    """update_engine's progress in the log: each new status, and the fraction every few
    seconds at most."""

    def __init__(self, device_id: str, *, every_s: float = PROGRESS_EVERY_S) -> None:
        self._device_id = device_id
        self._every_s = every_s
        self._status = ""
        self._last = 0.0

    def __call__(self, status: str, fraction: float) -> None:
        now = time.monotonic()
        if status == self._status and now - self._last < self._every_s:
            return
        self._status, self._last = status, now
        log.info("%s: update_engine: %s %d%%", self._device_id, status, round(100 * fraction))
