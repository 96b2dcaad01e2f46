"""The journal: strict records, atomic saves, and a corrupt file moved aside, never reused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.installed import InstalledRelease
from agent.journal import Journal, JournalRecord
from wire import FailureReason, UpdateState

IN_PROGRESS = JournalRecord(
    state=UpdateState.DOWNLOADING,
    current_version="2026.11.20",
    slot_versions={"a": "2026.11.20"},
    target_path="pi4/stable/2026.11.27/rom.img",
    target_version="2026.11.27",
    rollout_id="r-42",
    target_slot="b",
    bytes_written=4096,
    step_attempts=2,
    reason=FailureReason.NONE,
    detail={"note": "resume me"},
    updated_at=1764300000.5,
)

records = st.builds(
    JournalRecord,
    state=st.sampled_from(list(UpdateState)),
    current_version=st.text(max_size=20),
    slot_versions=st.dictionaries(st.sampled_from(["a", "b"]), st.text(max_size=10)),
    target_path=st.text(max_size=40),
    target_slot=st.sampled_from(["", "a", "b"]),
    bytes_written=st.integers(min_value=0, max_value=2**40),
    step_attempts=st.integers(min_value=0, max_value=100),
    reason=st.sampled_from(list(FailureReason)),
    detail=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8) | st.none()),
    updated_at=st.floats(min_value=0, max_value=4e9),
    slot_releases=st.dictionaries(
        st.sampled_from(["a", "b"]),
        st.builds(
            InstalledRelease,
            channel=st.text(max_size=8),
            model=st.text(max_size=8),
            release_counter=st.integers(min_value=0, max_value=2**62),
        ),
    ),
)


@given(records)
def test_a_record_survives_the_round_trip(record: JournalRecord) -> None:
    assert JournalRecord.from_json(record.to_json()) == record


def test_replace_changes_only_what_is_named() -> None:
    changed = IN_PROGRESS.replace(state=UpdateState.INSTALLED, bytes_written=8192)
    assert changed.state is UpdateState.INSTALLED
    assert changed.bytes_written == 8192
    assert changed.target_path == IN_PROGRESS.target_path
    assert IN_PROGRESS.state is UpdateState.DOWNLOADING


def _encoded(**overrides: object) -> bytes:
    body = json.loads(IN_PROGRESS.to_json())
    body.update(overrides)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe garbage",
        b"[1, 2]",
        IN_PROGRESS.to_json()[:-7],
        _encoded(format=2),
        _encoded(state="sleeping"),
        _encoded(reason="gremlins"),
        _encoded(bytes_written=-1),
        _encoded(bytes_written="12"),
        _encoded(step_attempts=True),
        _encoded(slot_versions={"c": "1"}),
        _encoded(slot_versions={"a": 1}),
        _encoded(target_slot="z"),
        _encoded(detail=[]),
        _encoded(updated_at=None),
        _encoded(slot_releases=[]),
        _encoded(slot_releases={"c": {"channel": "s", "model": "m", "release_counter": 1}}),
        _encoded(slot_releases={"a": {"channel": "s", "model": "m"}}),
        _encoded(slot_releases={"a": {"channel": "s", "model": "m", "release_counter": -1}}),
        _encoded(slot_releases={"a": {"channel": "s", "model": "m", "release_counter": True}}),
    ],
)
def test_decoding_is_strict(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the family is the contract, not the text
        JournalRecord.from_json(raw)


def test_a_missing_field_is_an_error_and_an_unknown_one_is_ignored() -> None:
    body = json.loads(IN_PROGRESS.to_json())
    del body["rollout_id"]
    with pytest.raises(ValueError, match="rollout_id"):
        JournalRecord.from_json(json.dumps(body).encode())
    assert JournalRecord.from_json(_encoded(added_by_a_newer_agent=1)) == IN_PROGRESS


def test_a_journal_from_before_release_counters_reads_as_none_known() -> None:
    body = json.loads(IN_PROGRESS.to_json())
    del body["slot_releases"]
    assert JournalRecord.from_json(json.dumps(body).encode()) == IN_PROGRESS


def test_with_slot_and_without_slot_keep_versions_and_releases_together() -> None:
    stable_5 = InstalledRelease(channel="stable", model="pi4", release_counter=5)
    noted = IN_PROGRESS.replace(**IN_PROGRESS.with_slot("b", "2026.11.27", stable_5))
    assert noted.slot_versions == {"a": "2026.11.20", "b": "2026.11.27"}
    assert noted.slot_releases == {"b": stable_5}
    assert JournalRecord.from_json(noted.to_json()) == noted
    unsigned = noted.replace(**noted.with_slot("b", "2026.12.4", None))
    assert unsigned.slot_releases == {}  # what b held before is no longer there
    forgotten = noted.replace(**noted.without_slot("b"))
    assert (forgotten.slot_versions, forgotten.slot_releases) == ({"a": "2026.11.20"}, {})


def test_load_answers_none_when_there_is_no_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "data" / "journal.json")
    assert journal.load() is None
    assert not journal.recovered_from_corruption


def test_save_then_load_in_a_new_process_view(tmp_path: Path) -> None:
    path = tmp_path / "data" / "journal.json"  # the directory is created on first save
    Journal(path).save(IN_PROGRESS)
    reopened = Journal(path)
    assert reopened.load() == IN_PROGRESS
    assert not reopened.recovered_from_corruption
    assert [p.name for p in path.parent.iterdir()] == ["journal.json"]


@pytest.mark.parametrize(
    "damage",
    [b"", b"\x00" * 64, b'{"format": 1, "sta', b"not json at all", b"{}"],
)
def test_a_corrupt_journal_is_moved_aside(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "journal.json"
    path.write_bytes(damage)
    journal = Journal(path)
    assert journal.load() is None
    assert journal.recovered_from_corruption
    assert journal.moved_aside is not None
    assert journal.moved_aside.name.startswith("journal.json.corrupt-")
    assert journal.moved_aside.read_bytes() == damage
    assert not path.exists()
    journal.save(IN_PROGRESS)  # the runner recovers and journals anew
    assert journal.load() == IN_PROGRESS
    assert not journal.recovered_from_corruption


def test_a_stray_temp_file_from_a_power_cut_is_ignored_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    Journal(path).save(IN_PROGRESS)
    newer = IN_PROGRESS.replace(state=UpdateState.INSTALLED).to_json()
    stray = tmp_path / ".journal.json.k3x9q2.tmp"
    stray.write_bytes(newer[: len(newer) // 2])  # cut while the temp file was written
    after_restart = Journal(path)
    assert after_restart.load() == IN_PROGRESS  # old record: the rename never happened
    assert stray.exists()  # load only reads: another process may be the writer
    after_restart.save(IN_PROGRESS)
    assert not stray.exists()  # the writer sweeps on its first save


class PowerCut(BaseException):
    """Raised by a patched syscall: the process stops there, as if the power went."""


@pytest.mark.parametrize(
    ("cut_at", "survivor"),
    [
        ("os.fsync", UpdateState.DOWNLOADING),
        ("os.replace", UpdateState.DOWNLOADING),
        ("durable.fsync_dir", UpdateState.INSTALLED),
    ],
)
def test_a_power_cut_during_save_leaves_old_or_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut_at: str, survivor: UpdateState
) -> None:
    path = tmp_path / "journal.json"
    journal = Journal(path)
    journal.save(IN_PROGRESS)

    def cut(*_args: object) -> None:
        raise PowerCut

    with monkeypatch.context() as patch:
        patch.setattr(cut_at, cut)
        with pytest.raises(PowerCut):
            journal.save(IN_PROGRESS.replace(state=UpdateState.INSTALLED))
    assert Journal(path).load() == IN_PROGRESS.replace(state=survivor)
    assert [p.name for p in tmp_path.iterdir()] == ["journal.json"]


def test_a_completed_save_replaces_the_record_whole(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    journal = Journal(path)
    journal.save(IN_PROGRESS)
    inode_before = os.stat(path).st_ino
    journal.save(IN_PROGRESS.replace(state=UpdateState.INSTALLED))
    assert os.stat(path).st_ino != inode_before  # a new file renamed over, never rewritten
    loaded = journal.load()
    assert loaded is not None
    assert loaded.state is UpdateState.INSTALLED
