"""One streaming pass over an image: its length, sha256 and the sha256 of each chunk.

The image is never held in memory: at most one chunk is. Devices use the chunk hashes to
check and resume a download piece by piece (`TargetCustom.CHUNK_SHA256`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageDigest:
    length: int
    sha256: str
    chunk_size: int
    chunk_sha256: tuple[str, ...]


def digest_image(
    path: Path, chunk_size: int, progress: Callable[[int], None] | None = None
) -> ImageDigest:
    """Hash `path` chunk by chunk; chunk i covers bytes [i*chunk_size, (i+1)*chunk_size).
    `progress` is told the length of each chunk once it is hashed."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    whole = hashlib.sha256()
    chunks: list[str] = []
    length = 0
    with Path(path).open("rb") as image:
        while chunk := image.read(chunk_size):
            whole.update(chunk)
            chunks.append(hashlib.sha256(chunk).hexdigest())
            length += len(chunk)
            if progress is not None:
                progress(len(chunk))
    return ImageDigest(length, whole.hexdigest(), chunk_size, tuple(chunks))
