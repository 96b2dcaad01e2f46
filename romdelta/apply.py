"""Apply a patch as a stream: the target is written once, in order, in bounded memory.

The ops are read from the header; copies read the source by offset (the running slot, on a
device) and go straight to the sink; literal blocks come from one segment at a time, each
decompressed with its reference ranges of the source as zstd's prefix. At most one
segment's literal bytes and its reference are held at once (`MAX_SEGMENT`, `MAX_REFERENCE`),
plus `PIECE` for copies, whatever the image size.

This module checks the patch's structure (`PatchError`); whether the output is the signed
image is for the caller to check, on the bytes as they are written (`sink`).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import BinaryIO, Final, Protocol

from romdelta.codec import zstd
from romdelta.format import WINDOW_LOG, Op, PatchError, PatchHeader, Segment, read_header

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
    literals = _literal_pieces(patch, source, header.segments)
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


def _literal_pieces(
    patch: BinaryIO, source: Source, segments: tuple[Segment, ...]
) -> _LiteralPieces:
    return _LiteralPieces(decompress_segment(patch, source, s) for s in segments)


def decompress_segment(patch: BinaryIO, source: Source, segment: Segment) -> bytes:
    """The literal bytes of `segment`, whose frame is next in `patch`."""
    frame = patch.read(segment.frame)
    if len(frame) != segment.frame:
        raise PatchError("the patch ends inside a frame")
    options: dict[int, int] = {zstd.DecompressionParameter.window_log_max: WINDOW_LOG}
    reference = _reference(source, segment.refs)
    prefix = zstd.ZstdDict(reference, is_raw=True).as_prefix if reference else None
    decompressor = zstd.ZstdDecompressor(zstd_dict=prefix, options=options)
    try:
        data = decompressor.decompress(frame, max_length=segment.size + 1)
    except zstd.ZstdError as exc:
        raise PatchError(f"a literal segment does not decompress: {exc}") from None
    if len(data) != segment.size or not decompressor.eof:
        raise PatchError(f"a literal segment holds {len(data)} bytes, not {segment.size}")
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
