"""Feedback, votes, blocking marks, what surfaces first and F-codes, on SQLite and PostgreSQL,
at the service layer (the HTTP side: tests/server/test_server_testers.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db import make_engine, make_sessions, upgrade_to_head
from server.errors import (
    ConflictError,
    GoneError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
)
from server.models import Device, FCode, Feedback, FeedbackGroup, Release, utcnow
from server.schemas import EnrollRequest
from server.services.devices import enroll_device
from server.services.fcodes import issue_fcodes, leave_preview, redeem_fcode
from server.services.feedback import (
    MAX_LOG_BYTES,
    FeedbackIn,
    close_group,
    mark_blocking,
    open_blocking_issues,
    submit_feedback,
    surfacing,
    vote,
)
from server.services.reports import ingest_reports
from server.testing import MOSQUITTO_PIPE_LEAK
from wire import FailureReason, StatusReport, UpdateState

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing

BUILD = "2026.48"
RACERS = 6


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    try:
        with make_sessions(engine)() as s:
            for n in range(1, 7):
                request = EnrollRequest(
                    enrollment_token="t", device_id=f"phone-{n}", model="sim", channel="preview"
                )
                enroll_device(s, request, "t")
            yield s
    finally:
        engine.dispose()


def _release(version: str, channel: str) -> Release:
    now = utcnow()
    return Release(
        version=version, channel=channel, model="sim", target_path=f"sim/{channel}/{version}/r",
        length=1, sha256="ab" * 32, notes="", published_at=now, release_counter=1, created_at=now,
    )  # fmt: skip


def _say(session: Session, device: int, text: str, build: str = BUILD, **kw: str) -> int:
    item = FeedbackIn(build=build, text=text, author=f"tester:phone-{device}",
                      device_id=f"phone-{device}", **kw)  # fmt: skip
    return int(submit_feedback(session, item).group_id)


def _fail(session: Session, device: int, seq: int, reason: FailureReason, **detail: str) -> None:
    report = StatusReport(
        device_id=f"phone-{device}", seq=seq, state=UpdateState.ROLLED_BACK,
        current_version="2026.47", target_version=BUILD, reason=reason, detail=dict(detail),
    )  # fmt: skip
    ingest_reports(session, f"phone-{device}", [report], via="http")


def test_similar_texts_share_a_group_per_build(session: Session) -> None:
    camera = _say(session, 1, "Camera app crashes when opening", category="camera")
    assert _say(session, 2, "the camera crashes on opening") == camera
    wifi = _say(session, 3, "wifi disconnects every few minutes")
    assert wifi != camera
    assert _say(session, 4, "Camera app crashes when opening", build="2026.49") != camera
    groups = session.scalars(select(FeedbackGroup).order_by(FeedbackGroup.id)).all()
    assert [(g.build, g.kind, g.category) for g in groups] == [
        (BUILD, "tester", "camera"), (BUILD, "tester", ""), ("2026.49", "tester", ""),
    ]  # fmt: skip


def test_surfacing_ranks_by_devices_then_votes_and_counts_agent_failures(
    session: Session,
) -> None:
    camera = _say(session, 1, "Camera app crashes when opening")
    _say(session, 2, "camera crashed on open")
    _say(session, 2, "camera app crashes on open again")  # the same device twice: one device
    wifi = _say(session, 3, "wifi drops after resume")
    for voter in ("tester:phone-4", "tester:phone-5", "tester:phone-6"):
        vote(session, wifi, voter)
    for device in (1, 2, 3):
        _fail(session, device, 1, FailureReason.HEALTH_CHECK, failed_check="network")
    _fail(session, 4, 1, FailureReason.HEALTH_CHECK, failed_check="camera-service")
    _fail(session, 5, 1, FailureReason.POLICY)  # a deferral is no problem of the build
    answer = surfacing(session, BUILD)
    rows = [(g.kind, g.title, g.devices, g.votes, g.reports) for g in answer.groups]
    assert rows == [
        ("agent", "health_check: network", 3, 0, 3),  # 2*3+0+1 = 7
        ("tester", "wifi drops after resume", 1, 3, 1),  # 2*1+3+1 = 6
        ("tester", "Camera app crashes when opening", 2, 0, 3),  # 2*2+0+1 = 5
        ("agent", "health_check: camera-service", 1, 0, 1),  # 3
    ]
    assert [g.rank for g in answer.groups] == [1, 2, 3, 4]
    assert answer.groups[2].group_id == camera
    assert answer.groups[2].samples[0] == "Camera app crashes when opening"
    again = surfacing(session, BUILD)  # agent groups are made once and keep their ids
    assert [g.group_id for g in again.groups] == [g.group_id for g in answer.groups]
    assert surfacing(session, "2026.01").groups == []


def test_an_old_group_sinks_below_a_fresh_one(session: Session) -> None:
    old = _say(session, 1, "screen flickers at low brightness")
    _say(session, 2, "screen flickering at low brightness")
    fresh = _say(session, 3, "bluetooth audio stutters")
    later = utcnow() + timedelta(days=1)
    group = session.get_one(FeedbackGroup, old)
    group.last_seen = later - timedelta(days=10)
    session.commit()
    ranked = [g.group_id for g in surfacing(session, BUILD, now=later).groups]
    assert ranked == [fresh, old]


def test_one_vote_per_tester_and_none_on_closed_or_missing_groups(session: Session) -> None:
    group = _say(session, 1, "keyboard lags")
    assert vote(session, group, "tester:phone-2").votes == 1
    with pytest.raises(ConflictError, match="already"):
        vote(session, group, "tester:phone-2")
    assert vote(session, group, "tester:phone-3").votes == 2
    close_group(session, group)
    with pytest.raises(ConflictError, match="closed"):
        vote(session, group, "tester:phone-4")
    with pytest.raises(NotFoundError):
        vote(session, group + 100, "tester:phone-4")


def test_an_oversized_log_is_refused_and_nothing_is_stored(session: Session) -> None:
    item = FeedbackIn(build=BUILD, text="boom", author="tester:phone-1", device_id="phone-1",
                      logs="x" * (MAX_LOG_BYTES + 1))  # fmt: skip
    with pytest.raises(TooLargeError):
        submit_feedback(session, item)
    assert session.scalar(select(func.count()).select_from(Feedback)) == 0
    assert session.scalar(select(func.count()).select_from(FeedbackGroup)) == 0
    fits = FeedbackIn(build=BUILD, text="boom", author="tester:phone-1", logs="é" * 100)
    stored = submit_feedback(session, fits)
    assert session.get_one(Feedback, stored.id).logs == "é" * 100


def test_blocking_groups_hold_their_build_until_lifted_or_closed(session: Session) -> None:
    preview, stable, other = (
        _release(BUILD, "preview"), _release(BUILD, "stable"), _release("2026.47", "stable"),
    )  # fmt: skip
    session.add_all([preview, stable, other])
    session.commit()
    a = _say(session, 1, "camera crashes")
    b = _say(session, 2, "battery drains overnight")
    _fail(session, 3, 1, FailureReason.BOOT_FAILED)
    agent_group = surfacing(session, BUILD).groups[0].group_id
    assert open_blocking_issues(session, release_id=preview.id) == 0
    with pytest.raises(InvalidInputError):
        mark_blocking(session, a, blocking=True, reason=" ")
    mark_blocking(session, a, blocking=True, reason="crashes on every start")
    mark_blocking(session, b, blocking=True, reason="drains in 2 h")
    mark_blocking(session, agent_group, blocking=True, reason="does not boot")
    assert open_blocking_issues(session, release_id=preview.id) == 3
    assert open_blocking_issues(session, release_id=stable.id) == 3  # the same build
    assert open_blocking_issues(session, release_id=other.id) == 0
    close_group(session, a)
    mark_blocking(session, b, blocking=False, reason="")
    assert open_blocking_issues(session, release_id=stable.id) == 1
    with pytest.raises(NotFoundError):
        open_blocking_issues(session, release_id=other.id + 1000)


# ---------------------------------------------------------------------- F-codes


def test_a_code_raced_by_many_devices_is_spent_exactly_once(db_url: str) -> None:
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    sessions = make_sessions(engine)
    try:
        with sessions() as s:
            for n in range(RACERS):
                request = EnrollRequest(enrollment_token="t", device_id=f"racer-{n}", model="sim",
                                        channel="stable")  # fmt: skip
                enroll_device(s, request, "t")
            (code,) = issue_fcodes(s, count=1, expires_in_s=60).codes
        outcomes: list[str] = []
        barrier = threading.Barrier(RACERS)

        def race(n: int) -> None:
            barrier.wait()
            with sessions() as s:  # SQLite: each one's first read takes the write lock
                device = s.get_one(Device, f"racer-{n}")
                try:
                    redeem_fcode(s, device, code, tester_token=lambda _s, d: f"token-{d}")
                    outcomes.append("won")
                except ConflictError:
                    outcomes.append("409")

        threads = [threading.Thread(target=race, args=(n,)) for n in range(RACERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes) == ["409"] * (RACERS - 1) + ["won"]
        with sessions() as s:
            channels = s.scalars(select(Device.channel)).all()
            winner = s.scalar(select(FCode.redeemed_by))
        assert sorted(channels) == ["preview"] + ["stable"] * (RACERS - 1)
        assert winner is not None
    finally:
        engine.dispose()


def test_refused_codes_change_nothing(session: Session) -> None:
    now = utcnow()
    (used, expired) = issue_fcodes(session, count=2, expires_in_s=60, now=now).codes
    device = session.get_one(Device, "phone-1")
    token = redeem_fcode(session, device, used, tester_token=lambda _s, d: f"t-{d}", now=now)
    assert (token.channel, token.tester_token) == ("preview", "t-phone-1")
    retry = redeem_fcode(session, device, used, tester_token=lambda _s, _d: "t2", now=now)
    assert (retry.channel, retry.tester_token) == ("preview", "t2")  # its answer was lost
    other = session.get_one(Device, "phone-2")
    other.channel = "stable"
    session.commit()
    for code, error, when in (
        (used, ConflictError, now),
        (expired, GoneError, now + timedelta(seconds=61)),
        ("F-NOT-A-CODE", NotFoundError, now),
    ):
        with pytest.raises(error):
            redeem_fcode(session, other, code, tester_token=lambda _s, _d: "x", now=when)
        session.rollback()
        assert session.get_one(Device, "phone-2").channel == "stable"
    spent = session.scalars(select(FCode).where(FCode.redeemed_by.is_not(None))).all()
    assert [f.redeemed_by for f in spent] == ["phone-1"]
    assert leave_preview(session, device).channel == "stable"
    assert session.get_one(Device, "phone-1").channel == "stable"
