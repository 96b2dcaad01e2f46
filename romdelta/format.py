"""The patch file: what it holds and how its header is read back, checked.

    MAGIC (8 bytes) | header length (u32, little-endian) | header | diffs

The header is xz-compressed JSON:

    {"format": 1, "block_size": 4096, "source_length": N, "target_length": M,
     "ops": [kind, count, argument, ...],
     "segments": [{"refs": [[offset, length], ...], "size": n, "frame": bytes, "crc32": c}]}

The target is written in order, block by block, by the ops: COPY `count` blocks from the
source starting at block `argument`; ZERO `count` blocks; LITERAL `count` blocks taken in
order from the literal stream. The literal stream is the concatenation of the segments; each
segment is made by an HDiffPatch diff (uncompressed, `frame` bytes) from the source ranges
`refs` (concatenated) to the segment's bytes, so a changed file is diffed against the old file
it replaces. `diffs` is one xz stream of every segment's diff in order (one stream, so the
compressor sees them all). The last block may be short (`target_length` is not a multiple of
the block size).
"""

from __future__ import annotations

import enum
import json
import lzma
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

MAGIC: Final = b"OFDELTA1"
FORMAT: Final = 1
BLOCK_SIZE: Final = 4096
MAX_HEADER: Final = 64 * 1024 * 1024
MAX_SEGMENT: Final = 16 * 1024 * 1024  # literal bytes in one frame (apply keeps one in memory)
MAX_REFERENCE: Final = 16 * 1024 * 1024  # reference bytes of one frame (kept in memory too)
MAX_DIFF: Final = 2 * MAX_SEGMENT + 1024 * 1024  # an HDiffPatch diff is never much larger
DICT_SIZE: Final = 16 * 1024 * 1024  # xz dictionary of the diffs: what apply's decoder holds
DIFF_FILTERS: Final = (  # measured on the ROM pair: pb=0 is 0.7 % smaller than xz -9e's default
    {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": DICT_SIZE, "pb": 0},
)
_LENGTH: Final = struct.Struct("<I")


class PatchError(ValueError):
    """The patch is malformed, or does not fit the source or the target it names."""


class Op(enum.IntEnum):
    COPY = 0
    ZERO = 1
    LITERAL = 2


@dataclass(frozen=True)
class Segment:
    refs: tuple[tuple[int, int], ...]  # (source offset, length) ranges: the reference prefix
    size: int  # literal bytes the frame decompresses to
    frame: int  # bytes of the segment's diff
    crc32: int  # of the segment's literal bytes: a damaged diff is caught where it is applied

    @property
    def reference_size(self) -> int:
        return sum(length for _, length in self.refs)


@dataclass(frozen=True)
class PatchHeader:
    block_size: int
    source_length: int
    target_length: int
    ops: tuple[tuple[Op, int, int], ...]
    segments: tuple[Segment, ...]

    def to_bytes(self) -> bytes:
        body = {
            "format": FORMAT,
            "block_size": self.block_size,
            "source_length": self.source_length,
            "target_length": self.target_length,
            "ops": [value for op in self.ops for value in op],
            "segments": [
                {
                    "refs": [list(r) for r in s.refs],
                    "size": s.size,
                    "frame": s.frame,
                    "crc32": s.crc32,
                }
                for s in self.segments
            ],
        }
        packed = lzma.compress(json.dumps(body, separators=(",", ":")).encode(), preset=6)
        return MAGIC + _LENGTH.pack(len(packed)) + packed

    def check(self) -> None:
        """Raise PatchError unless the ops write exactly `target_length` bytes, every copy and
        reference lies inside the source, and the literal stream matches the segments."""
        blocks = -(-self.target_length // self.block_size)
        source_blocks = self.source_length // self.block_size
        if self.block_size <= 0 or self.block_size % 512:
            raise PatchError(f"bad block size {self.block_size}")
        if sum(count for _, count, _ in self.ops) != blocks:
            raise PatchError("the ops do not cover the target")
        for op, count, first in self.ops:
            if count <= 0 or (op is Op.COPY and not 0 <= first <= source_blocks - count):
                raise PatchError(f"op {op.name} {count} at block {first} is out of range")
        literal = sum(count for op, count, _ in self.ops if op is Op.LITERAL)
        self._check_segments(literal)

    def _check_segments(self, literal_blocks: int) -> None:
        literal = sum(s.size for s in self.segments)
        short = -self.target_length % self.block_size if self._ends_literal() else 0
        if literal != literal_blocks * self.block_size - short:
            raise PatchError("the segments do not hold the literal blocks")
        for segment in self.segments:
            if (
                not 0 < segment.size <= MAX_SEGMENT
                or segment.reference_size > MAX_REFERENCE
                or not 0 < segment.frame <= MAX_DIFF
            ):
                raise PatchError("a segment is larger than apply allows")
            for offset, length in segment.refs:
                if offset < 0 or length <= 0 or offset + length > self.source_length:
                    raise PatchError(f"reference {offset}+{length} is outside the source")

    def _ends_literal(self) -> bool:
        return bool(self.ops) and self.ops[-1][0] is Op.LITERAL


def read_header(patch: BinaryIO) -> PatchHeader:
    """Read and check the header at the start of `patch`, leaving it at frame 0."""
    start = patch.read(len(MAGIC) + _LENGTH.size)
    if len(start) != len(MAGIC) + _LENGTH.size or not start.startswith(MAGIC):
        raise PatchError("not an Orange Friday delta (bad magic)")
    (length,) = _LENGTH.unpack(start[len(MAGIC) :])
    if length > MAX_HEADER:
        raise PatchError(f"header of {length} bytes is too large")
    packed = patch.read(length)
    try:
        body = json.loads(_unpack(packed))
    except (lzma.LZMAError, ValueError, EOFError) as exc:
        raise PatchError(f"unreadable header: {exc}") from None
    header = _header_from(body)
    header.check()
    return header


def _unpack(packed: bytes) -> bytes:
    """The header's JSON, refusing more than `MAX_HEADER` bytes of it."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=32 * 1024 * 1024)
    body = decompressor.decompress(packed, max_length=MAX_HEADER)
    if not decompressor.eof:
        raise PatchError("the header is cut short or larger than apply allows")
    return body


def _header_from(body: Any) -> PatchHeader:
    try:
        if body["format"] != FORMAT:
            raise PatchError(f"unknown delta format {body['format']!r}")
        flat = [int(v) for v in body["ops"]]
        if len(flat) % 3:
            raise PatchError("the ops list is not made of (kind, count, argument) triples")
        return PatchHeader(
            block_size=int(body["block_size"]),
            source_length=int(body["source_length"]),
            target_length=int(body["target_length"]),
            ops=tuple((Op(flat[i]), flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)),
            segments=tuple(_segment(s) for s in body["segments"]),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, PatchError):
            raise
        raise PatchError(f"malformed header: {exc!r}") from None


def _segment(raw: Any) -> Segment:
    refs = tuple((int(offset), int(length)) for offset, length in raw["refs"])
    return Segment(refs, int(raw["size"]), int(raw["frame"]), int(raw["crc32"]))
