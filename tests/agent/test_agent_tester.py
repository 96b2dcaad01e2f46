"""The agent's beta-tester parts that need no server: the channel override, the running
version, the bounded log excerpt."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import load_config
from agent.daemon import AgentDaemon
from agent.errors import ConfigError
from agent.journal import Journal, JournalRecord
from agent.outbox import Outbox
from agent.tester import bounded_tail, log_excerpt, running_version, save_channel
from wire import StatusReport, UpdateState, channel_topic

CONFIG = """
device_id = "phone-1"
model = "board"
channel = "stable"
server_url = "http://127.0.0.1:9"
data_dir = "data"
trusted_root = "root.json"
broker_url = "mqtt://127.0.0.1:9"
"""


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG)
    return path


def test_the_joined_channel_wins_over_the_config_file(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    assert load_config(path).channel == "stable"
    save_channel(tmp_path / "data", "preview")
    assert load_config(path).channel == "preview"
    save_channel(tmp_path / "data", "stable")
    assert load_config(path).channel == "stable"


def test_a_broken_override_is_a_config_error(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "channel").write_text("pre/view\n")
    with pytest.raises(ConfigError, match="channel override"):
        load_config(path)


def test_the_daemon_subscribes_to_the_joined_channel(tmp_path: Path) -> None:
    config = load_config(_config_file(tmp_path))  # read before joining: still stable
    save_channel(tmp_path / "data", "preview")
    agent = SimpleNamespace(parts=SimpleNamespace(reporter=None))  # only its reporter is set
    daemon = AgentDaemon(config, agent)  # type: ignore[arg-type]
    assert daemon.config.channel == "preview"
    assert daemon.doorbell is not None
    assert channel_topic("preview", "board") in daemon.doorbell._topics
    notice = (
        b'{"v": 1, "release_version": "2.0", "target_path": "board/preview/2.0/rom.img",'
        b' "channel": "preview", "model": "board", "rollout_id": "r", "percentage": 100}'
    )
    daemon._heard(channel_topic("stable", "board"), notice)
    assert daemon._inbox.empty()  # the old channel's notices are no longer ours
    daemon._heard(channel_topic("preview", "board"), notice)
    assert daemon._inbox.get_nowait().release_version == "2.0"  # type: ignore[union-attr]


def test_running_version_comes_from_the_journal(tmp_path: Path) -> None:
    assert running_version(tmp_path) == ""
    journal = Journal(tmp_path / "journal.json")
    journal.save(JournalRecord(state=UpdateState.COMMITTED, current_version="1.0"))
    assert running_version(tmp_path) == "1.0"
    journal.save(
        JournalRecord(state=UpdateState.TRIAL, current_version="1.0", target_version="2.0")
    )
    assert running_version(tmp_path) == "2.0"


def test_the_log_excerpt_holds_journal_and_reports_and_stays_bounded(tmp_path: Path) -> None:
    Journal(tmp_path / "journal.json").save(
        JournalRecord(state=UpdateState.ROLLED_BACK, current_version="1.0", detail={"x": "y"})
    )
    outbox = Outbox(tmp_path / "outbox")
    for _ in range(25):
        outbox.add(
            lambda seq: StatusReport("phone-1", seq, UpdateState.TRIAL, "1.0", detail={"n": seq})
        )
    full = log_excerpt(tmp_path, limit=10**7)
    assert '"state": "rolled_back"' in full
    compact = full.replace(" ", "")
    assert '"seq":24,' in compact
    assert '"seq":5,' in compact
    assert '"seq":4,' not in compact  # only the last 20 reports
    small = log_excerpt(tmp_path, limit=1000)
    assert len(small.encode()) <= 1000
    assert small.startswith("[... ")
    assert small.endswith(full[-100:])


@given(st.text(max_size=300), st.integers(min_value=0, max_value=400))
def test_bounded_tail_fits_and_keeps_the_end(text: str, limit: int) -> None:
    cut = bounded_tail(text, limit)
    assert len(cut.encode()) <= limit
    if len(text.encode()) <= limit:
        assert cut == text
    elif cut:
        kept = cut.split(" cut ...]\n", 1)[1]
        assert text.endswith(kept)
        assert len(kept.encode()) >= limit - 40 - 4  # mark + at most one cut character
