"""The agent against the real server when the server refuses a report for good (another report
already holds its seq): the refused report is set aside with its reason, the others are
delivered, and nothing is retried forever. Commands are acknowledged once handled."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.server_api import ServerApi
from lab.fleet import MIB, Backend, Board, running_backend
from server.schemas import CommandIn
from server.testing import sample_report
from wire import CommandKind, UpdateState

BOARD = Board(model="board", slot_size=2 * MIB, image_size=MIB, chunk_size=MIB)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Backend]:
    with running_backend(tmp_path, BOARD) as backend:
        yield backend


def test_a_report_refused_for_good_is_set_aside_and_the_rest_delivered(env: Backend) -> None:
    agent, _ = env.start_agent("dev-1")
    outbox = agent.parts.outbox
    assert len(outbox) == 0  # resume's report was delivered
    clash = outbox.add(lambda seq: sample_report("dev-1", seq, UpdateState.IDLE))
    later = outbox.add(lambda seq: sample_report("dev-1", seq, UpdateState.DEFERRED))
    server = agent.parts.server
    assert isinstance(server, ServerApi)
    other = dataclasses.replace(clash, slot="z")  # the server hears another report first
    assert server.send_reports([other]) == {clash.seq}

    agent.flush_reports()
    assert len(outbox) == 0
    assert [p.name.split(".")[0] for p in outbox.quarantined()] == [f"{clash.seq:020d}"]
    held = {r.seq: r for r in env.reports("dev-1")}
    assert held[clash.seq].slot == "z"
    assert held[later.seq].state == "deferred"
    agent.flush_reports()  # nothing left to send, nothing retried
    assert len(outbox) == 0


def test_a_handled_command_is_acknowledged_and_not_handed_out_again(env: Backend) -> None:
    agent, _ = env.start_agent("dev-1")
    env.admin.send_command("dev-1", CommandIn(kind=CommandKind.CHECK_NOW))
    assert len(agent.parts.server.poll().commands) == 1  # that answer is "lost": not handled
    assert len(agent.parts.server.poll().commands) == 1  # so it comes again
    agent.poll_once()  # handled and acknowledged
    assert agent.parts.server.poll().commands == ()
