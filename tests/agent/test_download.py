"""download_into: one verified pass from a real HTTP server into a file standing in for a slot."""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.download import StreamVerifier, download_into, exponential_backoff
from agent.errors import TransportError, UpdateCancelledError, VerificationError
from agent.fetcher import FetchLimits, HttpStatusError, make_fetcher
from agent.tuf_client import TargetInfo, TufClient
from hardware.blockdev import FileSlot
from lab.tufrepo import (
    RepoServer,
    TufRepo,
    chunk_hashes,
    chunked_rom,
    device_client,
    rom_custom,
    serve,
)
from wire import FailureReason

CHUNK = 64 * 1024
SIZE = 16 * CHUNK + 1234  # the last chunk is a short one
CHUNKED = "pi4/stable/2026.48/rom.img"
PLAIN = "pi4/stable/2026.48/plain.img"
SLOT_SIZE = SIZE + 100_000
DATA = random.Random(48).randbytes(SIZE)
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()


def no_wait(attempt: int) -> float:
    return 0.0


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    repo = TufRepo(tmp_path / "repo")
    repo.add_target(CHUNKED, DATA, chunked_rom(DATA, CHUNK, version="2026.48", model="pi4"))
    repo.add_target(PLAIN, DATA, rom_custom(version="2026.48", model="pi4"))
    repo.publish()
    return repo


@pytest.fixture
def server(repo: TufRepo) -> Iterator[RepoServer]:
    yield from serve(repo.base)


@pytest.fixture
def client(tmp_path: Path, repo: TufRepo, server: RepoServer) -> TufClient:
    client = device_client(tmp_path / "tuf", repo, server)
    client.refresh()
    return client


@pytest.fixture
def slot(tmp_path: Path) -> Iterator[FileSlot]:
    """A file the size of a slot, holding the old system's bytes (0xAA), opened r+b."""
    path = tmp_path / "slot_b"
    path.write_bytes(b"\xaa" * SLOT_SIZE)
    with FileSlot(path.open("r+b")) as sink:
        yield sink


def slot_bytes(sink: FileSlot) -> bytes:
    sink.flush()
    sink.seek(0)
    return sink.read()


def target_ranges(server: RepoServer) -> list[str]:
    """The Range header of each request for a target file, in order."""
    return [rng for path, rng in server.faults.requests if path.startswith("/targets/")]


def feed(verifier: StreamVerifier, data: bytes, piece: int) -> None:
    for at in range(0, len(data), piece):
        verifier.update(data[at : at + piece])


def fetch(client: TufClient, path: str, sink: FileSlot, **kwargs: object) -> TargetInfo:
    info = client.get_target(path)
    kwargs.setdefault("backoff", no_wait)
    download_into(make_fetcher(), client.target_url(info), info, sink, **kwargs)  # type: ignore[arg-type]
    return info


@pytest.mark.parametrize("path", [CHUNKED, PLAIN])
def test_image_lands_in_the_slot_and_is_synced(
    client: TufClient,
    server: RepoServer,
    slot: FileSlot,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    seen: list[int] = []
    fetch(client, path, slot, progress=seen.append)
    written = slot_bytes(slot)
    assert written[:SIZE] == DATA
    assert written[SIZE:] == b"\xaa" * (SLOT_SIZE - SIZE)  # nothing past the image
    assert synced == [slot.fileno()]
    assert seen == sorted(seen)
    assert seen[-1] == SIZE
    assert server.faults.target_bytes() == SIZE


def test_tampered_image_fails_at_the_bad_chunk(
    repo: TufRepo, client: TufClient, slot: FileSlot
) -> None:
    stored = repo.target_file(CHUNKED)
    tampered = bytearray(stored.read_bytes())
    tampered[5 * CHUNK + 17] ^= 0xFF
    stored.write_bytes(bytes(tampered))
    progress: list[int] = []
    with pytest.raises(VerificationError) as caught:
        fetch(client, CHUNKED, slot, progress=progress.append)
    assert caught.value.reason is FailureReason.HASH_MISMATCH
    assert "chunk 5 " in str(caught.value)
    assert progress[-1] <= 6 * CHUNK  # stopped at that chunk, not at the end


def test_tampered_image_without_chunk_hashes_fails_at_the_end(
    repo: TufRepo, client: TufClient, slot: FileSlot
) -> None:
    stored = repo.target_file(PLAIN)
    stored.write_bytes(DATA[:-1] + bytes([DATA[-1] ^ 1]))
    with pytest.raises(VerificationError) as caught:
        fetch(client, PLAIN, slot)
    assert caught.value.reason is FailureReason.HASH_MISMATCH


@pytest.mark.parametrize("path", [CHUNKED, PLAIN])
def test_a_longer_body_is_a_length_mismatch_and_never_written(
    client: TufClient, server: RepoServer, slot: FileSlot, path: str
) -> None:
    server.faults.extra_bytes = 10 * 1024 * 1024
    with pytest.raises(VerificationError) as caught:
        fetch(client, path, slot)
    assert caught.value.reason is FailureReason.LENGTH_MISMATCH
    assert slot_bytes(slot)[SIZE:] == b"\xaa" * (SLOT_SIZE - SIZE)


def test_a_shorter_stored_file_is_resumed_once_then_refused(
    repo: TufRepo, client: TufClient, server: RepoServer, slot: FileSlot
) -> None:
    repo.target_file(PLAIN).write_bytes(DATA[:1000])
    with pytest.raises(HttpStatusError) as caught:
        fetch(client, PLAIN, slot)
    assert caught.value.status == 416  # the server has nothing past byte 1000: final
    assert target_ranges(server) == ["", "bytes=1000-"]


@pytest.mark.parametrize("path", [CHUNKED, PLAIN])
def test_five_dropped_connections_still_end_in_a_good_image(
    client: TufClient, server: RepoServer, slot: FileSlot, path: str
) -> None:
    server.faults.drops = [1000, 3 * CHUNK + 5, 7, CHUNK, 2 * CHUNK - 1]
    fetch(client, path, slot)
    assert slot_bytes(slot)[:SIZE] == DATA
    assert server.faults.target_bytes() == SIZE  # no verified byte fetched twice
    assert target_ranges(server) == [
        "",
        "bytes=1000-",
        f"bytes={1000 + 3 * CHUNK + 5}-",
        f"bytes={1012 + 3 * CHUNK}-",
        f"bytes={1012 + 4 * CHUNK}-",
        f"bytes={1011 + 6 * CHUNK}-",
    ]


def test_six_drops_with_five_retries_give_up(
    client: TufClient, server: RepoServer, slot: FileSlot
) -> None:
    server.faults.drops = [100] * 6
    waits: list[int] = []
    with pytest.raises(TransportError):
        fetch(client, PLAIN, slot, backoff=lambda n: waits.append(n) or 0.0)
    assert waits == [1, 2, 3, 4, 5]


def test_a_missing_file_is_not_retried(
    client: TufClient, server: RepoServer, slot: FileSlot
) -> None:
    info = client.get_target(PLAIN)
    with pytest.raises(HttpStatusError) as caught:
        download_into(make_fetcher(), f"{server.targets_url}nope", info, slot, backoff=no_wait)
    assert caught.value.status == 404
    assert target_ranges(server) == [""]


@dataclass
class RefusingFetcher:
    """A fetcher of another kind (no HTTP): it decides itself whether asking again helps."""

    retryable: bool
    calls: int = 0

    def fetch_range(
        self, url: str, start: int = 0, *, limit: int | None = None
    ) -> Generator[bytes, None, None]:
        self.calls += 1
        raise TransportError("the medium said no", retryable=self.retryable)
        yield b""  # a generator, as the interface says


@pytest.mark.parametrize(("retryable", "calls"), [(False, 1), (True, 3)])
def test_the_fetcher_decides_what_is_retried(
    client: TufClient, slot: FileSlot, retryable: bool, calls: int
) -> None:
    info = client.get_target(PLAIN)
    fetcher = RefusingFetcher(retryable)
    with pytest.raises(TransportError):
        download_into(fetcher, "any://where", info, slot, retries=2, backoff=no_wait)
    assert fetcher.calls == calls


def test_a_cancel_stops_the_download_between_pieces(client: TufClient, slot: FileSlot) -> None:
    info = client.get_target(CHUNKED)
    seen: list[int] = []
    with pytest.raises(UpdateCancelledError) as caught:
        download_into(
            make_fetcher(FetchLimits(read_size=CHUNK)),
            client.target_url(info),
            info,
            slot,
            progress=seen.append,
            keep_going=lambda: not seen,  # cancelled once the first piece is in the slot
        )
    assert caught.value.reason is FailureReason.CANCELLED
    assert seen[-1] < SIZE  # stopped at a piece boundary, long before the end
    assert slot_bytes(slot)[seen[-1] : SIZE] == b"\xaa" * (SIZE - seen[-1])
    assert slot_bytes(slot)[SIZE:] == b"\xaa" * (SLOT_SIZE - SIZE)


def test_no_hashing_thread_outlives_a_download(client: TufClient, slot: FileSlot) -> None:
    fetch(client, CHUNKED, slot)
    assert not [t for t in threading.enumerate() if t.name.startswith("whole-hash")]


@pytest.mark.parametrize("ignore_range", [False, True])
def test_resume_rehashes_the_slot_instead_of_fetching_again(
    client: TufClient, server: RepoServer, slot: FileSlot, ignore_range: bool
) -> None:
    server.faults.ignore_range = ignore_range  # a 200 answer: the client skips what it has
    done = 5 * CHUNK + 300
    slot.write(DATA[:done])
    fetch(client, PLAIN, slot, resume_from=done)
    assert slot_bytes(slot)[:SIZE] == DATA
    assert target_ranges(server) == [f"bytes={done}-"]
    if not ignore_range:
        assert server.faults.target_bytes() == SIZE - done


def test_resume_with_chunk_hashes_starts_at_the_last_verified_chunk(
    client: TufClient, server: RepoServer, slot: FileSlot
) -> None:
    slot.write(DATA[: 5 * CHUNK + 300])
    fetch(client, CHUNKED, slot, resume_from=5 * CHUNK + 300)
    assert slot_bytes(slot)[:SIZE] == DATA
    assert server.faults.target_bytes() == SIZE - 5 * CHUNK


def test_resume_fetches_again_from_a_chunk_torn_by_a_power_cut(
    client: TufClient, server: RepoServer, slot: FileSlot
) -> None:
    torn = bytearray(DATA[: 6 * CHUNK])
    torn[2 * CHUNK + 10 : 2 * CHUNK + 4096] = b"\0" * (4096 - 10)
    slot.write(bytes(torn))
    fetch(client, CHUNKED, slot, resume_from=6 * CHUNK)
    assert slot_bytes(slot)[:SIZE] == DATA
    assert server.faults.target_bytes() == SIZE - 2 * CHUNK


def test_resume_of_a_complete_image_fetches_nothing(
    client: TufClient, server: RepoServer, slot: FileSlot
) -> None:
    slot.write(DATA)
    fetch(client, CHUNKED, slot, resume_from=SIZE)
    assert server.faults.target_bytes() == 0
    assert target_ranges(server) == []


def test_memory_stays_bounded_for_a_64_mib_image(tmp_path: Path) -> None:
    import tracemalloc

    image = tmp_path / "big.img"
    with image.open("wb") as out:
        block = random.Random(7).randbytes(1024 * 1024)
        for i in range(64):
            out.write(block[i:] + block[:i])
    repo = TufRepo(tmp_path / "big")
    with image.open("rb") as src:
        hashes = chunk_hashes(src, 4 * 1024 * 1024)
    custom = rom_custom(version="2", model="pi4", chunk_size=4 * 1024 * 1024, chunk_sha256=hashes)
    repo.add_target_file("pi4/big.img", image, custom)
    repo.publish()
    with RepoServer(repo.base) as server, FileSlot((tmp_path / "slot").open("w+b")) as sink:
        client = TufClient(
            tmp_path / "tuf",
            server.metadata_url,
            server.targets_url,
            bootstrap_root=repo.root_bytes(),
        )
        info = client.get_target("pi4/big.img")
        fetcher = make_fetcher()
        tracemalloc.start()
        try:
            download_into(fetcher, client.target_url(info), info, sink)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info.length == 64 * 1024 * 1024
    assert peak < 3 * 1024 * 1024, f"peak {peak} bytes"


# --------------------------------------------------------------------------- pure parts


def test_verifier_catches_bad_chunk_whatever_the_piece_sizes() -> None:
    hashes = chunk_hashes(io.BytesIO(DATA), CHUNK)
    info = TargetInfo(
        "x",
        SIZE,
        DATA_SHA256,
        rom_custom(version="1", model="m", chunk_size=CHUNK, chunk_sha256=hashes),
    )
    bad = bytearray(DATA)
    bad[9 * CHUNK] ^= 1
    for piece in (777, CHUNK - 1, CHUNK, CHUNK + 1, SIZE):
        good = StreamVerifier(info)
        feed(good, DATA, piece)
        good.finish()
        broken = StreamVerifier(info)
        with pytest.raises(VerificationError, match="chunk 9 "):
            feed(broken, bytes(bad), piece)
        assert broken.verified == 9 * CHUNK


def test_inconsistent_chunk_metadata_is_refused() -> None:
    custom = rom_custom(version="1", model="m", chunk_size=CHUNK, chunk_sha256=["00"])
    with pytest.raises(VerificationError):
        StreamVerifier(TargetInfo("x", SIZE, DATA_SHA256, custom))


def test_every_listed_hash_is_checked() -> None:
    info = TargetInfo("x", 3, hashlib.sha256(b"abc").hexdigest(), {}, {"sha512": "00" * 64})
    verifier = StreamVerifier(info)
    verifier.update(b"abc")
    with pytest.raises(VerificationError, match="sha512"):
        verifier.finish()


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0)]:
        delay = exponential_backoff(attempt)
        assert ceiling / 2 <= delay <= ceiling


@given(
    data=st.binary(min_size=1, max_size=3000),
    chunk_size=st.integers(min_value=1, max_value=700),
    piece=st.integers(min_value=1, max_value=1000),
    flip=st.integers(min_value=0),
)
@settings(max_examples=60, deadline=None)
def test_verifier_names_the_first_bad_chunk(
    data: bytes, chunk_size: int, piece: int, flip: int
) -> None:
    info = TargetInfo(
        "x",
        len(data),
        hashlib.sha256(data).hexdigest(),
        chunked_rom(data, chunk_size, version="1", model="m"),
    )
    good = StreamVerifier(info)
    feed(good, data, piece)
    good.finish()
    at = flip % len(data)
    bad = bytearray(data)
    bad[at] ^= 0x01
    broken = StreamVerifier(info)
    with pytest.raises(VerificationError, match=f"chunk {at // chunk_size} "):
        feed(broken, bytes(bad), piece)
    assert broken.verified == at // chunk_size * chunk_size
