"""`durable`'s writes: old content or new after a failure at any step, no temp file left, the
directory synced through a directory fd, modes as asked."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

import durable

OLD, NEW = b"old content", b"new content"
STEPS = durable.step_names("file")


class Cut(BaseException):
    """What a step hook raises: a BaseException, as a simulated power cut is."""


def cut_at(step: str) -> durable.StepHook:
    def hook(name: str) -> None:
        if name == step:
            raise Cut(name)

    return hook


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "state.json"
    path.write_bytes(OLD)
    return path


@pytest.fixture
def umask_027() -> Iterator[None]:
    before = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(before)


def test_the_hook_sees_the_four_documented_steps_in_order(target: Path) -> None:
    seen: list[str] = []
    durable.atomic_write(target, NEW, on_step=seen.append, tag="journal")
    assert seen == [
        "journal.write-temp",
        "journal.fsync-temp",
        "journal.replace",
        "journal.fsync-dir",
    ]
    assert seen == durable.step_names("journal")
    assert target.read_bytes() == NEW


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_step_leaves_old_or_new_and_no_temp_file(target: Path, step: str) -> None:
    with pytest.raises(Cut):
        durable.atomic_write(target, NEW, on_step=cut_at(step))
    renamed = step == "file.fsync-dir"  # only the last step comes after the rename
    assert target.read_bytes() == (NEW if renamed else OLD)
    assert entries(target.parent) == [target.name]


@pytest.mark.parametrize("step", STEPS[:3])
def test_a_failure_before_the_rename_creates_no_target(tmp_path: Path, step: str) -> None:
    path = tmp_path / "new.json"
    with pytest.raises(Cut):
        durable.atomic_write(path, NEW, on_step=cut_at(step))
    assert entries(tmp_path) == []


def test_a_failing_fsync_removes_the_temp_file(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(_fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        durable.atomic_write(target, NEW)
    assert target.read_bytes() == OLD
    assert entries(target.parent) == [target.name]


def test_an_interrupted_stream_removes_the_temp_file(target: Path) -> None:
    def interrupted(out: BinaryIO) -> None:
        out.write(NEW[:3])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        durable.atomic_write_stream(target, interrupted)
    assert target.read_bytes() == OLD
    assert entries(target.parent) == [target.name]


def test_a_failing_rename_removes_the_temp_file(tmp_path: Path) -> None:
    occupied = tmp_path / "a-directory"
    (occupied / "inside").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):  # a file cannot replace a directory
        durable.atomic_write(occupied, NEW)
    assert entries(tmp_path) == ["a-directory"]


def test_each_write_gets_a_temp_file_of_its_own(target: Path) -> None:
    """A second writer inside the first one's steps: neither reuses the other's temp file."""
    temps: list[list[Path]] = []

    def nested_writer(name: str) -> None:
        if name == "outer.fsync-temp":
            temps.append(durable.stale_temps(target))
            durable.atomic_write(target, b"inner", on_step=inner_temps, tag="inner")

    def inner_temps(name: str) -> None:
        if name == "inner.fsync-temp":
            temps.append(durable.stale_temps(target))

    durable.atomic_write(target, NEW, on_step=nested_writer, tag="outer")
    assert [len(found) for found in temps] == [1, 2]  # the inner one added a second name
    assert target.read_bytes() == NEW  # the outer rename came last
    assert entries(target.parent) == [target.name]


def test_the_directory_is_synced_through_a_directory_fd(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []  # per fsync: was the fd a directory?
    real_fsync = os.fsync

    def noting_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", noting_fsync)
    durable.atomic_write(target, NEW)
    assert synced == [False, True]  # the temp file, then its directory


def test_fsync_dir_opens_with_o_directory(target: Path) -> None:
    """A plain O_RDONLY open would accept a file here and fsync the wrong thing."""
    durable.fsync_dir(target.parent)
    with pytest.raises(NotADirectoryError):
        durable.fsync_dir(target)


def test_atomic_write_is_private_unless_told(tmp_path: Path, umask_027: None) -> None:
    durable.atomic_write(tmp_path / "credential", b"secret")
    durable.atomic_write(tmp_path / "motd", b"hello", mode=0o644)
    assert (tmp_path / "credential").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "motd").stat().st_mode & 0o777 == 0o644  # the umask does not apply
    assert (tmp_path / "credential").read_bytes() == b"secret"


def test_mode_none_never_chmods_and_follows_the_umask(
    tmp_path: Path, umask_027: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refusing_fchmod(_fd: int, _mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")  # what vfat answers

    monkeypatch.setattr(os, "fchmod", refusing_fchmod)
    durable.atomic_write(tmp_path / "autoboot.txt", b"[all]\n", mode=None)
    assert (tmp_path / "autoboot.txt").stat().st_mode & 0o777 == 0o640
    with pytest.raises(PermissionError):
        durable.atomic_write(tmp_path / "other", b"x", mode=0o644)
    assert entries(tmp_path) == ["autoboot.txt"]


def test_a_stream_may_seek_and_read_back_what_it_wrote(target: Path) -> None:
    def write_then_patch(out: BinaryIO) -> None:
        out.write(b"xxxx-tail")
        out.seek(0)
        out.write(b"head")
        out.seek(0)
        assert out.read() == b"head-tail"

    durable.atomic_write_stream(target, write_then_patch)
    assert target.read_bytes() == b"head-tail"


def test_atomic_copy_copies_a_large_file_whole(tmp_path: Path) -> None:
    data = os.urandom(durable.COPY_BUFFER * 2 + 12345)
    dest = tmp_path / "image.img"
    durable.atomic_copy(dest, io.BytesIO(data), mode=0o644)
    assert dest.read_bytes() == data
    assert dest.stat().st_mode & 0o777 == 0o644


def test_ensure_dir_creates_missing_parents_and_is_idempotent(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    durable.ensure_dir(deep, mode=0o700)
    durable.ensure_dir(deep)
    assert deep.is_dir()
    assert deep.stat().st_mode & 0o777 == 0o700


def test_create_file_never_replaces_and_removes_what_it_could_not_finish(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileExistsError):
        durable.create_file(target, NEW)
    assert target.read_bytes() == OLD
    key = target.with_name("key.pem")
    durable.create_file(key, b"pem", mode=0o600)
    assert (key.read_bytes(), key.stat().st_mode & 0o777) == (b"pem", 0o600)

    def broken_fsync(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        durable.create_file(target.with_name("half.pem"), b"pem")
    assert entries(target.parent) == ["key.pem", target.name]


def test_replace_moves_a_file_across_directories(tmp_path: Path) -> None:
    staging, published = tmp_path / "staging", tmp_path / "keys"
    durable.ensure_dir(staging)
    durable.ensure_dir(published)
    (staging / "root.pem").write_bytes(b"pem")
    durable.replace(staging / "root.pem", published / "root.pem")
    assert entries(staging) == []
    assert (published / "root.pem").read_bytes() == b"pem"
