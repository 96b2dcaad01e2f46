"""romdelta: apply(make(old, new), old) == new, and a damaged patch is refused, not applied."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from romdelta.apply import apply_patch
from romdelta.format import MAGIC, PatchError, read_header
from romdelta.make import MakeOptions, make_patch

BS = 4096
SMALL = MakeOptions(segment_size=4 * BS, reference_size=8 * BS, workers=1)


def roundtrip(tmp: Path, old: bytes, new: bytes, options: MakeOptions = SMALL) -> bytes:
    (tmp / "old").write_bytes(old)
    (tmp / "new").write_bytes(new)
    make_patch(tmp / "old", tmp / "new", tmp / "patch", options)
    out = io.BytesIO()
    with (tmp / "patch").open("rb") as patch:
        apply_patch(patch, io.BytesIO(old), out)
    return out.getvalue()


def image_pair(seed: int, blocks: int, tail: int) -> tuple[bytes, bytes]:
    """An old image of random blocks, and a new one of old blocks (moved), zeros, edited old
    blocks, fresh random blocks and a short tail."""
    rng = random.Random(seed)
    old_blocks = [rng.randbytes(BS) for _ in range(blocks)]
    new: list[bytes] = []
    for _ in range(blocks):
        kind = rng.randrange(4)
        if kind == 0:
            new.append(rng.choice(old_blocks))
        elif kind == 1:
            new.append(bytes(BS))
        elif kind == 2:
            edited = bytearray(rng.choice(old_blocks))
            edited[rng.randrange(BS)] ^= 0xFF
            new.append(bytes(edited))
        else:
            new.append(rng.randbytes(BS))
    return b"".join(old_blocks), b"".join(new) + rng.randbytes(tail)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32), blocks=st.integers(0, 24), tail=st.integers(0, BS - 1))
def test_apply_of_make_gives_the_new_image(
    tmp_path: Path, seed: int, blocks: int, tail: int
) -> None:
    old, new = image_pair(seed, blocks, tail)
    assert roundtrip(tmp_path, old, new) == new


def test_shared_blocks_are_copied_not_sent(tmp_path: Path) -> None:
    rng = random.Random(1)
    old = rng.randbytes(64 * BS)
    new = old[32 * BS :] + old[: 32 * BS]  # the same blocks, moved
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    stats = make_patch(tmp_path / "old", tmp_path / "new", tmp_path / "patch", SMALL)
    assert (stats.copied_blocks, stats.literal_blocks) == (64, 0)
    assert stats.patch_bytes < 200


def test_changed_blocks_compress_against_the_old_ones(tmp_path: Path) -> None:
    rng = random.Random(2)
    old = rng.randbytes(16 * BS)
    new = bytearray(old)
    for block in range(16):
        new[block * BS + 7] ^= 1  # every block changed by one byte
    assert roundtrip(tmp_path, old, bytes(new)) == new
    assert (tmp_path / "patch").stat().st_size < 2 * BS  # not 64 KiB of literal data


def test_segments_compress_on_several_processes(tmp_path: Path) -> None:
    old, new = image_pair(3, 40, 100)
    options = MakeOptions(segment_size=4 * BS, reference_size=8 * BS, workers=2)
    assert roundtrip(tmp_path, old, new, options) == new


def test_bad_magic_truncation_and_a_short_source_are_refused(tmp_path: Path) -> None:
    old, new = image_pair(4, 16, 10)
    roundtrip(tmp_path, old, new)
    patch = (tmp_path / "patch").read_bytes()
    with pytest.raises(PatchError, match="magic"):
        read_header(io.BytesIO(b"X" + patch[1:]))
    with pytest.raises(PatchError):
        apply_patch(io.BytesIO(patch[: len(patch) - 5]), io.BytesIO(old), io.BytesIO())
    with pytest.raises(PatchError):
        apply_patch(io.BytesIO(patch), io.BytesIO(old[: 3 * BS]), io.BytesIO())


def test_a_damaged_frame_is_refused(tmp_path: Path) -> None:
    old, new = image_pair(5, 16, 0)
    roundtrip(tmp_path, old, new)
    patch = bytearray((tmp_path / "patch").read_bytes())
    patch[-9] ^= 0x55  # inside the last segment's diff
    with pytest.raises(PatchError, match=r"decompress|apply"):
        apply_patch(io.BytesIO(bytes(patch)), io.BytesIO(old), io.BytesIO())


def test_header_is_checked(tmp_path: Path) -> None:
    assert MAGIC.startswith(b"OFDELTA")
    old, new = image_pair(6, 8, 0)
    roundtrip(tmp_path, old, new)
    with (tmp_path / "patch").open("rb") as patch:
        header = read_header(patch)
    assert header.target_length == len(new)
    assert header.source_length == len(old)
    assert os.path.getsize(tmp_path / "patch") > 0
