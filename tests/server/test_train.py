"""The weekly train and the scheduler on a real database with an injected clock: announce
Wednesday, internal Thursday, preview and stable's first wave Friday, later waves as the gates
pass; a blocking tester issue holds the build before stable; the CLI over the real server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from lab.processes import live_server
from server.api_client import OtaApi
from server.cli import app
from server.db import make_engine, make_sessions, upgrade_to_head
from server.scheduler import RolloutScheduler
from server.schemas import ReleaseIn
from server.services.feedback import FeedbackIn, mark_blocking, submit_feedback
from server.services.releases import register_release
from server.services.rollout_rules import GateConfig
from server.services.train import TrainConfig, start_train, train_status
from server.settings import Settings
from server.testing import sample_release
from wire import AvailabilityNotice, Command

MONDAY = date(2026, 11, 23)
CONFIG = TrainConfig(gates=GateConfig(min_devices=1, min_soak_s=3600), stable_waves=(1, 50, 100))


class Recorder:
    def __init__(self) -> None:
        self.notices: list[AvailabilityNotice] = []
        self.announcements: list[tuple[str, bytes]] = []

    def publish_notice(self, notice: AvailabilityNotice) -> None:
        self.notices.append(notice)

    def publish_command(self, device_id: str, cmd: Command) -> None:
        raise AssertionError("a rollout never messages one device")

    def publish_announcement(self, channel: str, payload: bytes) -> None:
        self.announcements.append((channel, payload))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # Tuesday

    def __call__(self) -> datetime:
        return self.now

    def at(self, day: int, hour: int, minute: int = 0) -> None:
        self.now = datetime.combine(MONDAY + timedelta(days=day), datetime.min.time(), UTC)
        self.now += timedelta(hours=hour, minutes=minute)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'train.db'}")
    upgrade_to_head(engine)
    made = make_sessions(engine)
    with made() as session:
        for n, channel in enumerate(("internal", "preview", "stable")):
            body = {**sample_release("2026.48", n + 1, channel=channel), "percentage": 0}
            register_release(session, ReleaseIn(**body))
        start_train(
            session, version="2026.48", model="sim", week_of=MONDAY, notes="n", now=Clock()()
        )
    yield made
    engine.dispose()


def stage(sessions: sessionmaker[Session]) -> tuple[str, dict[str, str]]:
    with sessions() as session:
        train = train_status(session, CONFIG)[0]
    return train.stage, train.rings


def test_the_train_runs_the_week_on_schedule(sessions: sessionmaker[Session]) -> None:
    clock, recorder = Clock(), Recorder()
    scheduler = RolloutScheduler(sessions, recorder, CONFIG, interval_s=0, clock=clock)
    scheduler.tick()
    assert stage(sessions)[0] == "new"  # Tuesday: nothing yet
    clock.at(2, 10)
    scheduler.tick()
    assert stage(sessions)[0] == "announced"
    assert recorder.announcements[0][0] == "preview"
    assert b"2026.48" in recorder.announcements[0][1]
    clock.at(3, 10)
    scheduler.tick()
    assert stage(sessions) == ("internal", {"internal": "active", "preview": "", "stable": ""})
    clock.at(3, 11, 1)  # soaked an hour (no internal device reported: nothing failed)
    scheduler.tick()
    assert stage(sessions)[1]["internal"] == "completed"
    clock.at(4, 9)
    scheduler.tick()
    assert stage(sessions)[0] == "preview"
    clock.at(4, 10, 1)
    scheduler.tick()
    clock.at(4, 12)
    scheduler.tick()
    assert stage(sessions) == (
        "stable",
        {"internal": "completed", "preview": "completed", "stable": "active"},
    )
    stable = [n for n in recorder.notices if n.channel == "stable"]
    assert stable[-1].percentage == 1
    for hour in (13, 14, 15):
        clock.at(4, hour, 1)
        scheduler.tick()
    assert [n.percentage for n in recorder.notices if n.channel == "stable"] == [1, 50, 100, 100]
    assert stage(sessions)[1]["stable"] == "completed"


def test_a_blocking_tester_issue_stops_the_build_before_stable(
    sessions: sessionmaker[Session],
) -> None:
    clock, recorder = Clock(), Recorder()
    scheduler = RolloutScheduler(sessions, recorder, CONFIG, interval_s=0, clock=clock)
    for day, hour in ((2, 10), (3, 10), (3, 11), (4, 9)):
        clock.at(day, hour, 1)
        scheduler.tick()
    assert stage(sessions) == (
        "preview",
        {"internal": "completed", "preview": "active", "stable": ""},
    )
    with sessions() as session:
        item = FeedbackIn(build="2026.48", text="camera crashes on start", author="tester:t1")
        group = submit_feedback(session, item).group_id
        mark_blocking(session, group, blocking=True, reason="camera is dead")
    for hour in (11, 12, 13):
        clock.at(4, hour)
        scheduler.tick()
    name, rings = stage(sessions)
    assert (name, rings["preview"], rings["stable"]) == ("preview", "paused", "")
    assert not [n for n in recorder.notices if n.channel == "stable"]


def test_the_cli_shows_and_moves_the_train(tmp_path: Path) -> None:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'server.db'}", admin_token="adm", rollout_tick_s=0
    )
    runner = CliRunner()
    with live_server(settings) as url:
        opts = ["--server", url, "--token", "adm"]
        started = runner.invoke(app, ["train", "start", "2026.48", "sim", *opts])
        assert started.exit_code == 0, started.output
        moved = runner.invoke(app, ["train", "advance", "2026.48", "sim", "--force", *opts])
        assert "now at announced" in moved.output
        held = runner.invoke(app, ["train", "advance", "2026.48", "sim", "--force", *opts])
        assert held.exit_code == 1
        assert "not published to internal" in held.output
        status = runner.invoke(app, ["train", "status", *opts])
        assert "2026.48 (sim): announced" in status.output
        assert runner.invoke(app, ["rollout", "status", *opts]).output.strip() == (
            "no staged rollouts"
        )
        missing = runner.invoke(app, ["rollout", "pause", "nosuch", "--reason", "r", *opts])
        assert missing.exit_code == 1
        assert "HTTP 404" in missing.output


def test_the_cli_refuses_a_train_for_a_bad_version_or_a_build_already_out(
    tmp_path: Path,
) -> None:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'server.db'}", admin_token="adm", rollout_tick_s=0
    )
    runner = CliRunner()
    with live_server(settings) as url:
        opts = ["--server", url, "--token", "adm"]
        bad = runner.invoke(app, ["train", "start", "2026/48", "sim", *opts])
        assert bad.exit_code == 1
        assert bad.stderr.startswith("ota: error: ")
        unseen = runner.invoke(app, ["train", "start", "2026.48", "sim", *opts])
        assert unseen.exit_code == 0, unseen.output
        assert "ota: warning: the server has no release 2026.48 for sim yet" in unseen.stderr
        with OtaApi(url, "adm") as api:
            api.register_release(ReleaseIn(**sample_release("2026.47", 1)))
        out = runner.invoke(app, ["train", "start", "2026.47", "sim", *opts])
        assert out.exit_code == 1
        assert "already at 100 % on stable" in out.stderr
