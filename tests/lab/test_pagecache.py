"""The lab's page cache: a cut keeps exactly what was synced, file data and directory entries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import durable
from lab.pagecache import CachedDisk


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[CachedDisk]:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "state").write_bytes(b"factory")
    cached = CachedDisk()
    cached.watch(tmp_path / "dev")
    with durable.using_disk(cached):
        yield cached


def write_unsynced(path: Path, data: bytes) -> None:
    """Into the page cache only: no fsync of the file, none of its directory."""
    with path.open("wb") as out:
        out.write(data)


def test_an_atomic_write_survives_a_cut(disk: CachedDisk, tmp_path: Path) -> None:
    state = tmp_path / "dev" / "state"
    durable.atomic_write(state, b"new")
    disk.cut(tmp_path / "dev")
    assert state.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path / "dev")) == ["state"]


def test_data_written_but_not_synced_is_lost(disk: CachedDisk, tmp_path: Path) -> None:
    state = tmp_path / "dev" / "state"
    write_unsynced(state, b"half")
    disk.cut(tmp_path / "dev")
    assert state.read_bytes() == b"factory"


def test_a_rename_before_its_directory_is_synced_is_lost(
    disk: CachedDisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable, "fsync_dir", lambda _path: None)
    durable.atomic_write(tmp_path / "dev" / "state", b"new")
    durable.atomic_write(tmp_path / "dev" / "fresh", b"made")
    disk.cut(tmp_path / "dev")
    assert (tmp_path / "dev" / "state").read_bytes() == b"factory"
    assert sorted(os.listdir(tmp_path / "dev")) == ["state"]  # neither the new file nor a temp


def test_a_renamed_file_never_synced_comes_back_empty(
    disk: CachedDisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable, "fsync_file", lambda _fd: None)
    durable.atomic_write(tmp_path / "dev" / "state", b"new")
    disk.cut(tmp_path / "dev")
    assert (tmp_path / "dev" / "state").read_bytes() == b""  # a torn journal, as on ext4


def test_a_removal_before_its_directory_is_synced_is_undone(
    disk: CachedDisk, tmp_path: Path
) -> None:
    (tmp_path / "dev" / "state").unlink()
    disk.cut(tmp_path / "dev")
    assert (tmp_path / "dev" / "state").read_bytes() == b"factory"
    (tmp_path / "dev" / "state").unlink()
    durable.fsync_dir(tmp_path / "dev")
    disk.cut(tmp_path / "dev")
    assert not (tmp_path / "dev" / "state").exists()


def test_a_directory_lasts_once_its_parent_is_synced(disk: CachedDisk, tmp_path: Path) -> None:
    durable.ensure_dir(tmp_path / "dev" / "outbox")
    durable.atomic_write(tmp_path / "dev" / "outbox" / "1.json", b"{}")
    (tmp_path / "dev" / "outbox" / "2.json").write_bytes(b"{}")  # not through the disk
    disk.cut(tmp_path / "dev")
    assert sorted(os.listdir(tmp_path / "dev" / "outbox")) == ["1.json", "2.json"]


def test_a_directory_made_without_syncing_its_parent_is_lost(
    disk: CachedDisk, tmp_path: Path
) -> None:
    durable.current_disk().mkdir(tmp_path / "dev" / "outbox", 0o755)
    disk.cut(tmp_path / "dev")
    assert not (tmp_path / "dev" / "outbox").exists()


def test_a_slot_keeps_what_was_written_up_to_its_last_fsync(
    disk: CachedDisk, tmp_path: Path
) -> None:
    slot = tmp_path / "dev" / "state"
    with slot.open("r+b") as out:
        out.write(b"FACT")
        out.flush()
        durable.fsync_file(out.fileno())
        out.write(b"ORY, and more")
    disk.cut(tmp_path / "dev")
    assert slot.read_bytes() == b"FACTory"


def test_outside_the_watched_roots_nothing_is_cached(disk: CachedDisk, tmp_path: Path) -> None:
    durable.atomic_write(tmp_path / "elsewhere", b"written")
    write_unsynced(tmp_path / "also", b"cached")
    disk.cut(tmp_path / "dev")
    assert (tmp_path / "elsewhere").read_bytes() == b"written"
    assert (tmp_path / "also").read_bytes() == b"cached"


def test_a_mode_set_before_the_sync_comes_back(disk: CachedDisk, tmp_path: Path) -> None:
    durable.atomic_write(tmp_path / "dev" / "key", b"secret", mode=0o600)
    (tmp_path / "dev" / "key").unlink()
    disk.cut(tmp_path / "dev")
    assert (tmp_path / "dev" / "key").stat().st_mode & 0o777 == 0o600
