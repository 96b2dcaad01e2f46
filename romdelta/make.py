"""Make a patch from an old image to a new one (the signing side; both cores).

1. Every block of the old image is hashed; a new block found anywhere in the old image
   becomes a COPY of it, an all-zero block a ZERO, the rest LITERAL (runs are merged).
2. The old blocks that the new image no longer holds are, mostly, the old versions of the
   files that changed; file systems lay files out in about the same order from one build to
   the next. Each segment of the literal stream is diffed (HDiffPatch) against the
   matching stretch of those old blocks.
3. Segments are diffed in parallel (`workers` processes), each reading its blocks itself;
   the diffs are then compressed as one xz stream.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import hdiffpatch

from romdelta.format import (
    BLOCK_SIZE,
    DIFF_FILTERS,
    MAX_REFERENCE,
    MAX_SEGMENT,
    Op,
    PatchHeader,
    Segment,
)

READ_SIZE: Final = 4 * 1024 * 1024
Runs = list[tuple[int, int]]  # (first block, count)


@dataclass(frozen=True)
class MakeOptions:
    block_size: int = BLOCK_SIZE
    # Measured on the ROM pair (decision 0018): 4 MiB segments against 8 MiB of old blocks.
    segment_size: int = 4 * 1024 * 1024  # literal bytes per diff
    reference_size: int = 8 * 1024 * 1024  # old bytes each segment is diffed against
    workers: int = 2

    def __post_init__(self) -> None:
        if self.segment_size > MAX_SEGMENT or self.reference_size > MAX_REFERENCE:
            raise ValueError("segment or reference larger than apply allows")
        if self.segment_size % self.block_size or self.reference_size % self.block_size:
            raise ValueError("segment and reference sizes must be whole blocks")


@dataclass(frozen=True)
class PatchStats:
    patch_bytes: int
    copied_blocks: int
    zero_blocks: int
    literal_blocks: int
    segments: int


@dataclass(frozen=True)
class _Job:
    """One segment to compress: which new blocks, against which old ranges."""

    old: Path
    new: Path
    block_size: int
    new_length: int
    blocks: Runs
    refs: tuple[tuple[int, int], ...]


def make_patch(old: Path, new: Path, out: Path, options: MakeOptions | None = None) -> PatchStats:
    """Write to `out` a patch that turns the image `old` into the image `new`."""
    opts = options or MakeOptions()
    bs = opts.block_size
    old_digests = list(block_digests(old, bs, whole_only=True))
    new_digests = list(block_digests(new, bs, whole_only=False))
    new_length = Path(new).stat().st_size
    ops, literal = plan_ops(old_digests, new_digests, bs, new_length)
    unused = unused_blocks(old_digests, set(new_digests), bs)
    jobs = [
        _Job(Path(old), Path(new), bs, new_length, blocks, refs)
        for blocks, refs in plan_segments(literal, unused, opts)
    ]
    frames = _compress_all(jobs, opts.workers)
    segments = tuple(
        Segment(job.refs, _literal_size(job), len(frame), crc)
        for job, (frame, crc) in zip(jobs, frames, strict=True)
    )
    header = PatchHeader(bs, Path(old).stat().st_size, new_length, tuple(ops), segments)
    header.check()
    with Path(out).open("wb") as sink:
        sink.write(header.to_bytes())
        sink.write(compress_diffs(frame for frame, _ in frames))
        size = sink.tell()
    counts = {op: sum(c for o, c, _ in ops if o is op) for op in Op}
    return PatchStats(size, counts[Op.COPY], counts[Op.ZERO], counts[Op.LITERAL], len(segments))


# --------------------------------------------------------------------------- planning


def block_digests(path: Path, block_size: int, *, whole_only: bool) -> Iterator[bytes]:
    """A 16-byte digest of each block of `path` (a short last block too, unless `whole_only`)."""
    with Path(path).open("rb") as image:
        while data := image.read(READ_SIZE):
            view = memoryview(data)
            for start in range(0, len(view), block_size):
                block = view[start : start + block_size]
                if len(block) == block_size or not whole_only:
                    yield hashlib.blake2b(block, digest_size=16).digest()


def zero_digest(block_size: int) -> bytes:
    return hashlib.blake2b(bytes(block_size), digest_size=16).digest()


def plan_ops(
    old_digests: Sequence[bytes], new_digests: Sequence[bytes], block_size: int, new_length: int
) -> tuple[list[tuple[Op, int, int]], Runs]:
    """The ops that write the new image, and the runs of new blocks that are literal."""
    first_at: dict[bytes, int] = {}
    for index, digest in enumerate(old_digests):
        first_at.setdefault(digest, index)
    zero = zero_digest(block_size)
    whole = new_length // block_size
    ops: list[tuple[Op, int, int]] = []
    literal: Runs = []
    for index, digest in enumerate(new_digests):
        if index < whole and digest == zero:
            _extend(ops, Op.ZERO, 0)
        elif index < whole and digest in first_at:
            _extend(ops, Op.COPY, first_at[digest])
        else:
            _extend(ops, Op.LITERAL, 0)
            _extend_runs(literal, index)
    return ops, literal


def _extend(ops: list[tuple[Op, int, int]], op: Op, block: int) -> None:
    """Add one block to the ops, merging it into the last op when it continues it."""
    if ops:
        last, count, first = ops[-1]
        continues = op is not Op.COPY or block == first + count
        if last is op and continues:
            ops[-1] = (op, count + 1, first)
            return
    ops.append((op, 1, block))


def _extend_runs(runs: Runs, block: int) -> None:
    if runs and runs[-1][0] + runs[-1][1] == block:
        runs[-1] = (runs[-1][0], runs[-1][1] + 1)
    else:
        runs.append((block, 1))


def unused_blocks(
    old_digests: Sequence[bytes], new_digests: set[bytes], block_size: int
) -> list[int]:
    """The old blocks whose content the new image does not hold (zero blocks left out)."""
    zero = zero_digest(block_size)
    return [i for i, d in enumerate(old_digests) if d not in new_digests and d != zero]


def plan_segments(
    literal: Runs, unused: list[int], opts: MakeOptions
) -> Iterator[tuple[Runs, tuple[tuple[int, int], ...]]]:
    """Cut the literal runs into segments; give each the stretch of unused old blocks at
    the same relative place (the old files its new files most likely replace)."""
    per_segment = opts.segment_size // opts.block_size
    per_reference = opts.reference_size // opts.block_size
    total = sum(count for _, count in literal)
    done = 0
    for blocks in _cut(literal, per_segment):
        size = sum(count for _, count in blocks)
        middle = (done + size / 2) * len(unused) / total if total else 0
        start = min(max(0, int(middle - per_reference / 2)), max(0, len(unused) - per_reference))
        chosen = unused[start : start + per_reference]
        yield (
            blocks,
            tuple((first * opts.block_size, n * opts.block_size) for first, n in _runs(chosen)),
        )
        done += size


def _cut(runs: Runs, per_segment: int) -> Iterator[Runs]:
    """`runs` in groups of at most `per_segment` blocks."""
    group: Runs = []
    room = per_segment
    for first, count in runs:
        while count:
            take = min(count, room)
            group.append((first, take))
            first, count, room = first + take, count - take, room - take
            if room == 0:
                yield group
                group, room = [], per_segment
    if group:
        yield group


def _runs(blocks: Iterable[int]) -> Runs:
    runs: Runs = []
    for block in blocks:
        _extend_runs(runs, block)
    return runs


# --------------------------------------------------------------------------- compressing


def _compress_all(jobs: list[_Job], workers: int) -> list[tuple[bytes, int]]:
    """Every segment's frame, in order; on `workers` processes when there is work for them."""
    if workers <= 1 or len(jobs) <= 1:
        return [compress_segment(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(compress_segment, jobs))


def compress_diffs(diffs: Iterable[bytes]) -> bytes:
    """The diffs, in order, as one xz stream."""
    compressor = lzma.LZMACompressor(lzma.FORMAT_XZ, filters=DIFF_FILTERS)
    return b"".join(compressor.compress(diff) for diff in diffs) + compressor.flush()


def compress_segment(job: _Job) -> tuple[bytes, int]:
    """The HDiffPatch diff (uncompressed: `compress_diffs` does it for all at once) from the
    segment's reference to its bytes, and the crc32 of those bytes."""
    with job.new.open("rb") as new, job.old.open("rb") as old:
        data = b"".join(_read_runs(new, job.blocks, job.block_size, job.new_length))
        reference = b"".join(_read(old, offset, length) for offset, length in job.refs)
    return hdiffpatch.diff(reference, data, None, validate=False), zlib.crc32(data)


def _literal_size(job: _Job) -> int:
    bs = job.block_size
    return sum(min(count * bs, job.new_length - first * bs) for first, count in job.blocks)


def _read_runs(image: BinaryIO, runs: Runs, block_size: int, length: int) -> Iterator[bytes]:
    for first, count in runs:
        offset = first * block_size
        yield _read(image, offset, min(count * block_size, length - offset))


def _read(image: BinaryIO, offset: int, length: int) -> bytes:
    data = os.pread(image.fileno(), length, offset)
    if len(data) != length:
        raise OSError(f"short read at {offset} of {image.name}")
    return data
