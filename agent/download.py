"""One pass from the network through the hashes straight into the inactive slot.

No temporary copy of the image and fixed-size buffers whatever its size. Length and hashes are
checked while the bytes land: a body longer than the signed length fails at once, a target
with chunk hashes fails at the first bad chunk, and the whole-image hashes are compared at the
end. A dropped connection resumes with an HTTP range request where the last one stopped; a
download started again after a reboot (`resume_from`) re-hashes what the slot already holds
instead of fetching it again. See docs/decisions/0005-agent-one-pass-download.md.

This module only checks and writes. Making the slot bootable is the caller's job, after
`download_into` returned. The network is behind `agent.fetcher.RangeFetcher` (which also
decides whether a failure is worth a retry) and the slot behind `hardware.bootcontrol.SlotSink`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Protocol

from agent.errors import InstallError, TransportError, UpdateCancelledError, VerificationError
from agent.fetcher import RangeFetcher
from agent.tuf_client import TargetInfo
from hardware.bootcontrol import SlotSink
from wire import FailureReason

log = logging.getLogger(__name__)

BUFFER_SIZE: Final = 1024 * 1024
PARALLEL_HASH_BYTES: Final = 128 * 1024  # smaller pieces are not worth a thread hand-off
WRITEBACK_BYTES: Final = 32 * 1024 * 1024  # start writing back to disk every this many bytes


class Readable(Protocol):
    """What re-hashing stored bytes needs: a slot (`SlotSink`) or any binary file."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


def keep_going() -> bool:
    """The default for `download_into(keep_going=...)`: nobody cancels."""
    return True


def exponential_backoff(attempt: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): doubling, capped, half jittered."""
    ceiling: float = min(cap, base * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311  # retry jitter, no secret


# --------------------------------------------------------------------------- checking


class StreamVerifier:
    """Length and hashes of one target, checked as its bytes arrive in order.

    `update` raises `VerificationError` at the first byte past the signed length and at the
    first chunk whose sha256 does not match; `finish` checks the length and whole-image
    hashes. With chunk hashes, `verified` is the end of the last good chunk and `rollback`
    returns there (the bytes after it are not trusted yet). Given a `hash_pool`, the
    whole-image hashes of large pieces run on it while this thread hashes the chunk.
    """

    def __init__(self, target: TargetInfo, hash_pool: Executor | None = None) -> None:
        self.target = target
        self._hash_pool = hash_pool
        self._chunk_size, self._chunk_digests = _chunk_plan(target)
        self._whole = {algo: _new_hasher(algo) for algo in target.all_hashes}
        self._chunk = hashlib.sha256()
        self.position = 0
        self._mark: tuple[int, dict[str, Any]] = (0, _copy(self._whole))

    @property
    def chunked(self) -> bool:
        return self._chunk_size > 0

    @property
    def verified(self) -> int:
        """Bytes from the start that are as trustworthy as they can be before `finish`."""
        return self._mark[0] if self.chunked else self.position

    def update(self, data: bytes) -> None:
        if self.position + len(data) > self.target.length:
            raise VerificationError(
                f"{self.target.path}: more than the signed {self.target.length} bytes",
                FailureReason.LENGTH_MISMATCH,
            )
        view = memoryview(data)
        while view:
            piece = view[: self._room_in_chunk()]
            self._hash(piece)
            self.position += len(piece)
            view = view[len(piece) :]
            if self._at_chunk_end():
                self._close_chunk()

    def _hash(self, piece: memoryview) -> None:
        """Whole-image and chunk hashes of `piece`; for a large piece of a chunked target
        the two run at once on two threads (hashlib releases the GIL for large buffers)."""
        pool = self._hash_pool
        if pool is None or not self.chunked or len(piece) < PARALLEL_HASH_BYTES:
            _update_all([*self._whole.values(), self._chunk], piece)
            return
        whole = pool.submit(_update_all, list(self._whole.values()), piece)
        self._chunk.update(piece)
        whole.result()

    def split(self, data: bytes, start: int) -> Iterator[memoryview]:
        """`data` (which begins at byte `start`) cut at chunk boundaries, so that one write
        to the slot never spans two signed chunks (a torn write spoils at most one)."""
        view = memoryview(data)
        if not self.chunked:
            yield view
            return
        while view:
            room = self._chunk_size - start % self._chunk_size
            yield view[:room]
            view = view[room:]
            start += room

    def rollback(self) -> None:
        """Forget the bytes after the last verified chunk boundary."""
        if self.chunked:
            self.position, whole = self._mark
            self._whole = _copy(whole)
            self._chunk = hashlib.sha256()

    def finish(self) -> None:
        if self.position != self.target.length:
            raise VerificationError(
                f"{self.target.path}: {self.position} bytes, signed length is {self.target.length}",
                FailureReason.LENGTH_MISMATCH,
            )
        for algo, expected in self.target.all_hashes.items():
            if self._whole[algo].hexdigest() != expected:
                raise VerificationError(
                    f"{self.target.path}: {algo} does not match the signed hash",
                    FailureReason.HASH_MISMATCH,
                )

    def _room_in_chunk(self) -> int:
        if not self.chunked:
            return self.target.length - self.position
        end = (self.position // self._chunk_size + 1) * self._chunk_size
        return min(end, self.target.length) - self.position

    def _at_chunk_end(self) -> bool:
        if not self.chunked:
            return False
        return self.position % self._chunk_size == 0 or self.position == self.target.length

    def _close_chunk(self) -> None:
        index = (self.position - 1) // self._chunk_size
        if self._chunk.hexdigest() != self._chunk_digests[index]:
            start = index * self._chunk_size
            raise VerificationError(
                f"{self.target.path}: chunk {index} (bytes {start}-{self.position - 1}) "
                "does not match its signed sha256",
                FailureReason.HASH_MISMATCH,
            )
        self._chunk = hashlib.sha256()
        self._mark = (self.position, _copy(self._whole))


def _update_all(hashers: list[Any], piece: memoryview) -> None:
    for hasher in hashers:
        hasher.update(piece)


def _chunk_plan(target: TargetInfo) -> tuple[int, tuple[str, ...]]:
    """(chunk size, chunk digests), or (0, ()) for a target without chunk hashes."""
    size, digests = target.chunk_size, target.chunk_sha256
    if size is None and not digests:
        return 0, ()
    if size is None or size <= 0 or len(digests) != -(-target.length // size):
        raise VerificationError(
            f"{target.path}: chunk_size and chunk_sha256 do not describe {target.length} bytes"
        )
    return size, digests


def _new_hasher(algo: str) -> Any:
    try:
        if algo == "blake2b-256":  # TUF's name; hashlib spells it with a digest size
            return hashlib.blake2b(digest_size=32)
        return hashlib.new(algo)
    except ValueError:
        raise VerificationError(
            f"unsupported hash algorithm {algo!r}", FailureReason.HASH_MISMATCH
        ) from None


def _copy(hashers: dict[str, Any]) -> dict[str, Any]:
    return {algo: hasher.copy() for algo, hasher in hashers.items()}


def verify_stored(source: Readable, target: TargetInfo) -> None:
    """Raise `VerificationError` unless `source` (from its start) is exactly `target`."""
    verifier = StreamVerifier(target)
    source.seek(0)
    for piece in _read_pieces(source, target.length + 1):
        verifier.update(piece)
    verifier.finish()


# --------------------------------------------------------------------------- the pass


def download_into(
    fetcher: RangeFetcher,
    url: str,
    target: TargetInfo,
    sink: SlotSink,
    *,
    resume_from: int = 0,
    progress: Callable[[int], None] | None = None,
    retries: int = 5,
    backoff: Callable[[int], float] = exponential_backoff,
    sleep: Callable[[float], None] = time.sleep,
    keep_going: Callable[[], bool] = keep_going,
) -> None:
    """Stream `url` into `sink` (a slot opened r+b), verified against `target`, then fsync.

    `resume_from`: bytes the sink already holds from an earlier attempt (re-hashed, not
    fetched). `progress(n)` is told the bytes in place after each write. `backoff(k)` gives
    the seconds to wait before retry k. `keep_going()` is asked before every piece received
    and every retry; False stops the download. Bytes past `target.length` in the sink are
    not touched.

    Raises `VerificationError` (LENGTH_MISMATCH, HASH_MISMATCH: never retried),
    `TransportError` once `retries` transport failures are used up or at once for one the
    fetcher says is not retryable (a 404), `InstallError` when the sink cannot be written,
    `UpdateCancelledError` when `keep_going()` said no (the slot then holds a partial image).
    """
    pacing = _Pacing(progress, keep_going, retries, backoff, sleep)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="whole-hash") as hash_pool:
        verifier = StreamVerifier(target, hash_pool)
        if resume_from > 0:
            _rehash_sink(sink, verifier, min(resume_from, target.length))
        _receive_with_retries(fetcher, url, verifier, sink, pacing)
        verifier.finish()
    _sync(sink)


@dataclass(frozen=True)
class _Pacing:
    """What the caller of `download_into` is told, asked, and how patient it is."""

    progress: Callable[[int], None] | None
    keep_going: Callable[[], bool]
    retries: int
    backoff: Callable[[int], float]
    sleep: Callable[[float], None]


def _receive_with_retries(
    fetcher: RangeFetcher, url: str, verifier: StreamVerifier, sink: SlotSink, pacing: _Pacing
) -> None:
    failures = 0
    target = verifier.target
    while verifier.position < target.length:
        _stop_if_cancelled(pacing.keep_going, verifier)
        try:
            _receive(fetcher, url, verifier, sink, pacing)
        except TransportError as exc:
            failures += 1
            if failures > pacing.retries or not exc.retryable:
                raise
            delay = pacing.backoff(failures)
            log.warning(
                "download of %s broke at byte %d (%s); retry %d in %.1fs",
                *(target.path, verifier.position, exc, failures, delay),
            )
            pacing.sleep(delay)


def _stop_if_cancelled(keep_going: Callable[[], bool], verifier: StreamVerifier) -> None:
    if not keep_going():
        raise UpdateCancelledError(
            f"download of {verifier.target.path} cancelled at byte {verifier.position}"
        )


def _receive(
    fetcher: RangeFetcher,
    url: str,
    verifier: StreamVerifier,
    sink: SlotSink,
    pacing: _Pacing,
) -> None:
    """One HTTP request from `verifier.position` to the end of the body.

    The socket is read and hashed on this thread while a `SlotWriter` thread writes the
    pieces already checked (hashlib and write(2) both release the GIL, so the two overlap).
    """
    _seek(sink, verifier.position)
    remaining = verifier.target.length - verifier.position
    writer = SlotWriter(sink, verifier.position, pacing.progress)
    try:
        body = fetcher.fetch_range(url, verifier.position, limit=remaining)
        with contextlib.closing(body) as chunks:
            for data in chunks:
                _stop_if_cancelled(pacing.keep_going, verifier)
                start = verifier.position
                verifier.update(data)  # before writing: a too-long body never touches the slot
                for piece in verifier.split(data, start):
                    writer.put(piece)
    finally:
        writer.close()
    if verifier.position < verifier.target.length:
        raise TransportError(
            f"body of {url} ended at byte {verifier.position} of {verifier.target.length}"
        )


class SlotWriter:
    """Writes checked pieces into the slot on its own thread, in order, at most `depth`
    pieces behind the reader (memory stays bounded).

    Every `WRITEBACK_BYTES` it asks the kernel to start writing the finished range to disk
    and to drop it from the page cache (`POSIX_FADV_DONTNEED`: a hint, not a sync), so the
    one fsync at the end has little left to do and the image does not crowd the cache.
    A failure on the writer thread (`InstallError`, or a simulated power cut) is raised in
    the reader's thread at its next `put` or at `close`.
    """

    def __init__(
        self,
        sink: SlotSink,
        start: int,
        progress: Callable[[int], None] | None,
        depth: int = 2,
    ) -> None:
        self._sink = sink
        self._position = start
        self._flushed_to = start
        self._progress = progress
        self._queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="slot-writer", daemon=True)
        self._thread.start()

    def put(self, data: memoryview) -> None:
        self._raise_if_failed()
        self._queue.put(data)

    def close(self) -> None:
        """Wait until every piece is written; raise what the writer thread ran into."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._failed:
                continue  # drain, so the reader never blocks on a dead writer
            try:
                _write(self._sink, data)
                self._position += len(data)
                self._start_writeback()
                if self._progress is not None:
                    self._progress(self._position)
            except BaseException as exc:  # noqa: BLE001 (handed to the reader's thread)
                self._failed = True
                self._error = exc

    def _start_writeback(self) -> None:
        if self._position - self._flushed_to < WRITEBACK_BYTES:
            return
        self._sink.drop_written(self._flushed_to, self._position - self._flushed_to)
        self._flushed_to = self._position


def _rehash_sink(sink: SlotSink, verifier: StreamVerifier, upto: int) -> None:
    """Feed what the slot already holds (up to `upto`) through `verifier`.

    With chunk hashes, stop at the first chunk that does not match (a write torn by a power
    cut) and drop a trailing partial chunk: the download continues from the last verified
    boundary. Without them, every byte held counts; the final hash is the judge.
    """
    _seek(sink, 0)
    try:
        for piece in _read_pieces(sink, upto):
            verifier.update(piece)
    except VerificationError as exc:
        if exc.reason is not FailureReason.HASH_MISMATCH:
            raise
        if verifier.verified > 0:  # a first chunk that differs is just an older image
            log.info("slot holds a bad chunk, fetching again from it: %s", exc)
    verifier.rollback()
    target = verifier.target
    if verifier.verified > 0:
        log.info("resuming %s at byte %d of %d", target.path, verifier.verified, target.length)


def _read_pieces(source: Readable, upto: int) -> Iterator[bytes]:
    """`source` from its position in `BUFFER_SIZE` pieces, at most `upto` bytes, to EOF."""
    left = upto
    while left > 0:
        try:
            piece = source.read(min(BUFFER_SIZE, left))
        except OSError as exc:
            raise InstallError(f"cannot read back the slot: {exc}") from exc
        if not piece:
            return
        left -= len(piece)
        yield piece


def _seek(sink: Readable, offset: int) -> None:
    try:
        sink.seek(offset)
    except OSError as exc:
        raise InstallError(f"cannot seek in the slot: {exc}") from exc


def _write(sink: SlotSink, data: bytes | memoryview) -> None:
    """All of `data` (an unbuffered slot may take less than asked for in one call)."""
    view = memoryview(data)
    try:
        while view:
            written = sink.write(view)
            if not written:
                raise OSError(errno.EIO, "the slot took no bytes")
            view = view[written:]
    except OSError as exc:
        raise _install_error("cannot write the slot", exc) from exc


def _sync(sink: SlotSink) -> None:
    """Flush, then make durable the way the slot's backend does it (`SlotSink.fsync`)."""
    try:
        sink.flush()
        sink.fsync()
    except OSError as exc:
        raise _install_error("cannot sync the slot", exc) from exc


def _install_error(action: str, exc: OSError) -> InstallError:
    reason = FailureReason.DISK_FULL if exc.errno == errno.ENOSPC else FailureReason.INTERNAL
    return InstallError(f"{action}: {exc}", reason)
