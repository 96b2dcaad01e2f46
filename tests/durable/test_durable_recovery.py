"""What `durable` offers after a power cut: stale temp files found and removed, a corrupt file
moved aside, and `read_json` telling a missing file from a corrupt one."""

from __future__ import annotations

from pathlib import Path

import pytest

import durable


def test_a_temp_file_in_flight_is_what_stale_temps_finds(tmp_path: Path) -> None:
    """The names `atomic_write` gives its temp files are the names the sweep looks for."""
    path = tmp_path / "journal.json"
    in_flight: list[list[Path]] = []

    def look(name: str) -> None:
        if name == "journal.replace":
            in_flight.append(durable.stale_temps(path))

    durable.atomic_write(path, b"{}", on_step=look, tag="journal")
    [found] = in_flight
    assert len(found) == 1
    assert durable.is_temp_name(found[0].name)
    assert found[0].name.startswith(".journal.json.")
    assert durable.stale_temps(path) == []  # gone once renamed


def test_stale_temps_of_one_file_leave_the_others_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    path.write_bytes(b"{}")
    mine = [tmp_path / ".journal.json.k3x9q2.tmp", tmp_path / ".journal.json.a1.tmp"]
    others = [tmp_path / ".next-seq.zz.tmp", tmp_path / "journal.json.corrupt-1", tmp_path / "x"]
    for stray in mine + others:
        stray.write_bytes(b"half")
    assert durable.stale_temps(path) == sorted(mine)
    assert durable.remove_stale_temps(path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [path, *others])


def test_stale_temps_in_a_directory_are_all_removed(tmp_path: Path) -> None:
    strays = [tmp_path / ".a.json.1.tmp", tmp_path / ".next-seq.2.tmp"]
    for stray in strays:
        stray.write_bytes(b"")
    (tmp_path / "00000000000000000001.json").write_bytes(b"{}")
    assert durable.stale_temps_in(tmp_path) == sorted(strays)
    assert durable.remove_stale_temps_in(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["00000000000000000001.json"]
    assert durable.stale_temps_in(tmp_path / "missing") == []


def test_is_temp_name() -> None:
    assert durable.is_temp_name(".journal.json.abc.tmp")
    assert not durable.is_temp_name("journal.json")
    assert not durable.is_temp_name(".hidden")
    assert not durable.is_temp_name("report.tmp")


def test_move_aside_keeps_the_bytes_under_a_new_name(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    path.write_bytes(b"\xff torn")
    aside = durable.move_aside(path, "corrupt")
    assert not path.exists()
    assert aside.parent == tmp_path
    assert aside.name.startswith("journal.json.corrupt-")
    assert aside.name.rsplit("-", 1)[1].isdigit()
    assert aside.read_bytes() == b"\xff torn"
    durable.atomic_write(path, b"{}")  # the name is free for a fresh file
    assert durable.read_json(path) == {}


def test_move_aside_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        durable.move_aside(tmp_path / "nope.json")


def test_read_json_tells_missing_from_corrupt(tmp_path: Path) -> None:
    assert durable.read_json(tmp_path / "nope.json") is None
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="not a JSON object"):
        durable.read_json(tmp_path / "list.json")
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert durable.read_json(tmp_path / "ok.json") == {"a": 1}


@pytest.mark.parametrize("raw", [b"", b'{"a": 1', b"\xff\xfe{}", b"null", b'"text"'])
def test_read_json_raises_value_error_for_anything_torn_or_wrong(
    tmp_path: Path, raw: bytes
) -> None:
    path = tmp_path / "torn.json"
    path.write_bytes(raw)
    with pytest.raises(ValueError):  # noqa: PT011 (JSONDecodeError, UnicodeDecodeError, ours)
        durable.read_json(path)


def test_read_json_lets_other_io_errors_through(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        durable.read_json(tmp_path)
