"""The outbox: sequence numbers never reused nor doubled, reports never lost, across restarts
and power cuts."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import durable
from agent.outbox import COUNTER_NAME, Outbox, report_name
from wire import StatusReport, UpdateState


def building(state: UpdateState = UpdateState.IDLE) -> Callable[[int], StatusReport]:
    def build(seq: int) -> StatusReport:
        return StatusReport(device_id="dev-1", seq=seq, state=state, current_version="1.0")

    return build


class PowerCut(BaseException):
    """The process stops at a syscall, as if the power went."""


@contextlib.contextmanager
def power_cut_after(durable_steps: int) -> Iterator[None]:
    """Let `durable_steps` fsync/replace/fsync_dir calls through, then cut the power."""
    left = [durable_steps]
    real = {"os.fsync": os.fsync, "os.replace": os.replace, "durable.fsync_dir": None}

    def stepping(name: str) -> Callable[..., Any]:
        def step(*args: Any) -> Any:
            if left[0] <= 0:
                raise PowerCut(name)
            left[0] -= 1
            original = real[name] or _real_fsync_dir
            return original(*args)

        return step

    with contextlib.ExitStack() as stack:
        for name in real:
            stack.enter_context(mock.patch(name, stepping(name)))
        yield


_real_fsync_dir = durable.fsync_dir


def test_add_numbers_from_zero_and_keeps_reports_until_acked(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    assert len(outbox) == 0
    assert outbox.pending() == []
    first = outbox.add(building(UpdateState.DOWNLOADING))
    second = outbox.add(building(UpdateState.INSTALLED))
    assert (first.seq, second.seq) == (0, 1)
    assert outbox.pending() == [first, second]
    assert outbox.pending(limit=1) == [first]
    outbox.ack([0, 99])  # 99 was never sent: ignored
    assert outbox.pending() == [second]
    assert len(outbox) == 1


def test_numbers_are_never_reused_after_everything_was_acked(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    seqs = [outbox.add(building()).seq for _ in range(3)]
    outbox.ack(seqs)
    assert Outbox(tmp_path).add(building()).seq == 3


def test_a_lost_counter_cannot_go_back_behind_a_report_file(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for _ in range(5):
        outbox.add(building())
    (tmp_path / COUNTER_NAME).unlink()
    assert Outbox(tmp_path).add(building()).seq == 5


def test_a_build_that_ignores_its_number_is_refused(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    with pytest.raises(ValueError, match="expected 0"):
        outbox.add(lambda _seq: building()(7))
    assert len(outbox) == 0


@pytest.mark.parametrize(
    "damage", [b"", b"\x00\x00\x00", b'{"v": 1, "device_id": "dev-1", "se', b'{"v": 1}']
)
def test_a_corrupt_report_is_quarantined_not_lost(tmp_path: Path, damage: bytes) -> None:
    outbox = Outbox(tmp_path)
    good = outbox.add(building())
    (tmp_path / report_name(1)).write_bytes(damage)
    assert outbox.pending() == [good]
    [aside] = outbox.quarantined()
    assert aside.name.startswith(f"{report_name(1)}.corrupt-")
    assert aside.read_bytes() == damage
    assert Outbox(tmp_path).add(building()).seq == 2  # its number stays used


def test_a_report_file_holding_another_number_is_quarantined(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.add(building())
    shutil.copy(tmp_path / report_name(0), tmp_path / report_name(4))
    assert [r.seq for r in outbox.pending()] == [0]
    assert len(outbox.quarantined()) == 1


def test_a_corrupt_counter_is_kept_aside_and_numbering_goes_on(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.add(building())
    outbox.add(building())
    (tmp_path / COUNTER_NAME).write_bytes(b"\xde\xad")
    assert Outbox(tmp_path).add(building()).seq == 2
    assert [p.name.split(".")[0] for p in Outbox(tmp_path).quarantined()] == [COUNTER_NAME]


def test_stray_and_truncated_temp_files_are_never_reports(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    kept = outbox.add(building())
    whole = building()(1).to_json()
    (tmp_path / f".{report_name(1)}.a1b2c3.tmp").write_bytes(whole[:10])  # cut mid-write
    (tmp_path / f".{report_name(2)}.d4e5f6.tmp").write_bytes(whole)  # cut before rename
    reopened = Outbox(tmp_path)
    assert reopened.pending() == [kept]
    assert len(reopened) == 1
    assert reopened.add(building()).seq == 1
    assert not [p for p in tmp_path.iterdir() if durable.is_temp_name(p.name)]


@pytest.mark.parametrize("durable_steps", range(8))
def test_a_power_cut_anywhere_in_add_loses_nothing_returned(
    tmp_path: Path, durable_steps: int
) -> None:
    outbox = Outbox(tmp_path)
    before = outbox.add(building())
    returned: list[StatusReport] = []
    with power_cut_after(durable_steps), contextlib.suppress(PowerCut):
        returned.append(outbox.add(building()))
    after_restart = Outbox(tmp_path)
    pending = after_restart.pending()
    assert pending[0] == before
    assert all(r in pending for r in returned)  # add returned: it is on disk
    assert len(pending) <= 2  # nothing doubled
    nxt = after_restart.add(building())
    assert nxt.seq > max(r.seq for r in pending)


class OutboxModel(RuleBasedStateMachine):
    """Random add / ack / restart / power cut, checked against a plain list."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="outbox-"))
        self.outbox = Outbox(self.directory)
        self.pending: dict[int, StatusReport] = {}
        self.highest = -1

    def teardown(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _added(self, report: StatusReport) -> None:
        assert report.seq > self.highest, "sequence numbers must strictly increase"
        self.highest = report.seq
        self.pending[report.seq] = report

    @rule(state=st.sampled_from(list(UpdateState)))
    def add(self, state: UpdateState) -> None:
        self._added(self.outbox.add(building(state)))

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def ack_some(self, data: st.DataObject) -> None:
        known = sorted(self.pending)
        acked = data.draw(st.lists(st.sampled_from(known), unique=True))
        unknown = data.draw(st.lists(st.integers(min_value=0, max_value=200), max_size=3))
        self.outbox.ack([*acked, *unknown])
        for seq in acked:
            del self.pending[seq]
        for seq in unknown:  # an unknown number the model holds is acked too
            self.pending.pop(seq, None)

    @rule()
    def restart(self) -> None:
        self.outbox = Outbox(self.directory)

    @rule(durable_steps=st.integers(min_value=0, max_value=6))
    def power_cut_during_add(self, durable_steps: int) -> None:
        try:
            with power_cut_after(durable_steps):
                self._added(self.outbox.add(building()))
        except PowerCut:
            self.outbox = Outbox(self.directory)
            for report in self.outbox.pending():  # durable just before the cut: it counts
                if report.seq not in self.pending:
                    self._added(report)

    @rule(cut_at=st.integers(min_value=1, max_value=200))
    def stray_temp_file(self, cut_at: int) -> None:
        body = building()(self.highest + 1).to_json()
        temp = self.directory / f".{report_name(self.highest + 1)}.x{cut_at}.tmp"
        temp.write_bytes(body[:cut_at])
        self.outbox = Outbox(self.directory)

    @invariant()
    def pending_is_exactly_what_was_not_acked(self) -> None:
        assert self.outbox.pending() == [self.pending[s] for s in sorted(self.pending)]
        assert len(self.outbox) == len(self.pending)
        assert self.outbox.quarantined() == []


OutboxModel.TestCase.settings = settings(max_examples=30, stateful_step_count=20, deadline=None)
test_outbox_model = OutboxModel.TestCase
