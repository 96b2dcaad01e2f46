"""Deltas at publish time: a patch from each earlier build to the new one, as extra targets.

Each delta is a TUF target beside the full image (`wire.delta_target_name`), signed with it
in the same publish, whose `custom` is a `wire.DeltaCustom`: the source build's version,
sha256 and length, and the full target it produces. The source image comes from the
repository's own storage (a published target), checked against its signed sha256 before a
patch is made from it. The patch itself is `romdelta`'s (both cores).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from romdelta.make import MakeOptions, make_patch
from signing.errors import PublishError
from signing.storage import Storage
from wire import DeltaCustom, delta_target_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeltaSource:
    """A published build a delta starts from."""

    version: str
    target_path: str
    sha256: str
    length: int
    storage_name: str  # where its image is stored


@dataclass(frozen=True)
class MadeDelta:
    target: TargetFile
    patch: Path

    @property
    def sha256(self) -> str:
        return str(self.target.hashes["sha256"])


def make_delta(
    store: Storage,
    source: DeltaSource,
    image: Path,
    full: TargetFile,
    workdir: Path,
    options: MakeOptions | None = None,
) -> MadeDelta:
    """The delta target from `source` to the image of `full`, its patch under `workdir`.

    Raises PublishError when the source image is not in storage or is not the signed one."""
    local = workdir / f"source-{source.sha256}"
    if not store.get_file(source.storage_name, local):
        raise PublishError(
            f"the image of {source.version} ({source.storage_name}) is not in storage: "
            "cannot make a delta from it"
        )
    if _sha256(local) != source.sha256:
        raise PublishError(f"the stored image of {source.version} does not match its sha256")
    patch = workdir / f"delta-from-{source.sha256}"
    stats = make_patch(local, image, patch, options)
    local.unlink()
    log.info(
        "delta %s -> %s: %d bytes (%d blocks copied, %d literal)",
        *(source.version, full.path, stats.patch_bytes, stats.copied_blocks, stats.literal_blocks),
    )
    return MadeDelta(_delta_target(source, full, patch), patch)


def _delta_target(source: DeltaSource, full: TargetFile, patch: Path) -> TargetFile:
    custom = DeltaCustom(
        source_version=source.version,
        source_sha256=source.sha256,
        source_length=source.length,
        target_path=full.path,
        target_sha256=full.hashes["sha256"],
        target_length=full.length,
    )
    return TargetFile(
        length=patch.stat().st_size,
        hashes={"sha256": _sha256(patch)},
        path=delta_target_name(full.path, source.version),
        unrecognized_fields={"custom": custom.to_custom()},
    )


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
