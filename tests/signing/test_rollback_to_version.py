"""Roll back to version V: V's image is signed again as a newer release, and a real device on
the later build installs it forwards (TUF and the agent never go down)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware.bootcontrol import Slot
from lab.fleet import KIB, Board, running_backend
from signing.errors import PublishError
from signing.rollback import republish_as_rollback, rollback_version
from wire.versions import Version

BOARD = Board(model="board", slot_size=256 * KIB, image_size=64 * KIB)


@pytest.mark.parametrize(("latest", "to"), [("2.0", "1.0"), ("2026.48", "2026.47"), ("9", "10")])
def test_the_rollback_version_sorts_after_the_latest(latest: str, to: str) -> None:
    assert Version(rollback_version(latest, to)) > Version(latest)
    assert Version(f"{latest}.1") > Version(rollback_version(latest, to))


def test_a_device_goes_forwards_to_the_old_image(tmp_path: Path) -> None:
    with running_backend(tmp_path, BOARD, rollout_tick_s=0) as backend:
        repo = backend.repo
        agent, sim = backend.start_agent("dev-1", health_deadline_s=2.0)
        for version in ("1.0", "2.0"):
            release = backend.publish(version)
            agent.poll_once()
        assert agent.current_version == "2.0"
        with pytest.raises(PublishError, match="never published"):
            republish_as_rollback(repo, to_version="0.9", channel="stable", model="board")
        back = republish_as_rollback(repo, to_version="1.0", channel="stable", model="board")
        assert back.version == "2.0-rollback-to-1.0"
        assert back.release_counter > release.release_counter
        backend.register(back)
        agent.poll_once()
    assert agent.current_version == "2.0-rollback-to-1.0"
    one = backend.build("1.0").read_bytes()
    active = sim.status().active
    assert active is Slot.B  # start on a: 1.0 went to b, 2.0 to a, the rollback to b
    assert sim.slot_path(active).read_bytes()[: len(one)] == one
