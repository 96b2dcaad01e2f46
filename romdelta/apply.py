"""Apply a patch as a stream: the target is written once, in order, in bounded memory.

The ops are read from the header; copies read the source by offset (the running slot, on a
device) and go straight to the sink; literal blocks come from one segment at a time, each
patched (HDiffPatch) from its reference ranges of the source. At most one segment's literal
bytes, its diff and its reference are held at once (`MAX_SEGMENT`, `MAX_REFERENCE`), plus
`PIECE` for copies, whatever the image size.

This module checks the patch's structure (`PatchError`); whether the output is the signed
image is for the caller to check, on the bytes as they are written (`sink`).
"""

from __future__ import annotations

import errno
import lzma
import zlib
from collections.abc import Iterator
from typing import BinaryIO, Final, Protocol

import hdiffpatch

from romdelta.format import DICT_SIZE, Op, PatchError, PatchHeader, Segment, read_header

PIECE: Final = 1024 * 1024
_ZEROS: Final = bytes(PIECE)


class Source(Protocol):
    """The old image, read by offset (a slot, or any binary file)."""

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...


class Sink(Protocol):
    """Where the target goes, in order from its first byte."""

    def write(self, data: bytes | memoryview, /) -> int | None: ...


def apply_patch(patch: BinaryIO, source: Source, sink: Sink) -> PatchHeader:
    """Write the target that `patch` makes from `source` into `sink`; return the header.

    Raises PatchError for a malformed patch or a source shorter than the patch needs, and
    whatever `sink.write` raises (OSError, or the caller's check of the output).
    """
    header = read_header(patch)
    diffs = DiffStream(patch)
    literals = _LiteralPieces(decompress_segment(diffs, source, s) for s in header.segments)
    left = header.target_length
    for op, count, first in header.ops:
        size = min(count * header.block_size, left)
        if op is Op.COPY:
            _copy(source, first * header.block_size, size, sink)
        elif op is Op.ZERO:
            _zeros(size, sink)
        else:
            _literal(literals, size, sink)
        left -= size
    diffs.finish()
    return header


def _copy(source: Source, offset: int, size: int, sink: Sink) -> None:
    source.seek(offset)
    while size > 0:
        data = source.read(min(PIECE, size))
        if not data:
            raise PatchError(f"the source ends before byte {offset + size}")
        _write(sink, data)
        size -= len(data)


def _zeros(size: int, sink: Sink) -> None:
    while size > 0:
        _write(sink, memoryview(_ZEROS)[: min(PIECE, size)])
        size -= PIECE


def _literal(pieces: _LiteralPieces, size: int, sink: Sink) -> None:
    while size > 0:
        data = pieces.take(min(PIECE, size))
        _write(sink, data)
        size -= len(data)


class _LiteralPieces:
    """The literal stream, one decompressed segment at a time."""

    def __init__(self, segments: Iterator[bytes]) -> None:
        self._segments = segments
        self._current = memoryview(b"")

    def take(self, size: int) -> memoryview:
        """Up to `size` next literal bytes (fewer at a segment's end; never none)."""
        if not self._current:
            self._current = memoryview(next(self._segments, b""))
            if not self._current:
                raise PatchError("the ops ask for more literal bytes than the segments hold")
        piece, self._current = self._current[:size], self._current[size:]
        return piece


class DiffStream:
    """The xz stream of the segments' diffs, read in order, a diff at a time."""

    def __init__(self, patch: BinaryIO) -> None:
        self._patch = patch
        self._decoder = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=2 * DICT_SIZE)

    def read(self, size: int) -> bytes:
        """Exactly the next `size` bytes; PatchError when the stream ends first."""
        pieces: list[bytes] = []
        left = size
        while left > 0:
            if self._decoder.eof:
                raise PatchError("the diffs end before the segments do")
            data = self._patch.read(PIECE) if self._decoder.needs_input else b""
            if self._decoder.needs_input and not data:
                raise PatchError("the patch ends inside the diffs")
            try:
                piece = self._decoder.decompress(data, max_length=left)
            except lzma.LZMAError as exc:
                raise PatchError(f"the diffs do not decompress: {exc}") from None
            pieces.append(piece)
            left -= len(piece)
        return b"".join(pieces)

    def finish(self) -> None:
        """PatchError unless the stream ends here, intact (its index and footer checked)."""
        if self._decoder.eof:
            return
        while not self._decoder.eof:
            data = self._patch.read(PIECE)
            if not data:
                raise PatchError("the patch ends inside the diffs")
            try:
                extra = self._decoder.decompress(data, max_length=1)
            except lzma.LZMAError as exc:
                raise PatchError(f"the diffs do not decompress: {exc}") from None
            if extra:
                raise PatchError("the diffs hold more than the segments")


def decompress_segment(diffs: DiffStream, source: Source, segment: Segment) -> bytes:
    """The literal bytes of `segment`, whose diff is next in `diffs`."""
    frame = diffs.read(segment.frame)
    reference = _reference(source, segment.refs)
    try:
        data = hdiffpatch.apply(reference, frame)
    except hdiffpatch.HDiffPatchError as exc:
        raise PatchError(f"a literal segment does not apply: {exc}") from None
    if len(data) != segment.size or zlib.crc32(data) != segment.crc32:
        raise PatchError(f"a literal segment does not apply to {segment.size} good bytes")
    return data


def _reference(source: Source, refs: tuple[tuple[int, int], ...]) -> bytes:
    pieces = []
    for offset, length in refs:
        source.seek(offset)
        data = source.read(length)
        if len(data) != length:
            raise PatchError(f"the source ends inside reference {offset}+{length}")
        pieces.append(data)
    return b"".join(pieces)


def _write(sink: Sink, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = sink.write(view)
        if written is None:
            return  # a buffered writer took it all
        if written == 0:
            raise OSError(errno.EIO, "the sink took no bytes")
        view = view[written:]
