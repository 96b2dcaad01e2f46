"""TrustedClock: the recorded time only moves forward, a torn file is nothing recorded, and a
clock running past the signed expiry is not recorded as the truth."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.trusted_clock import TrustedClock

TODAY = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EXPIRES = TODAY + timedelta(days=1)  # the timestamp's signed expiry


@dataclass
class SettableClock:
    """The device's clock, set by hand."""

    at: datetime = TODAY

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def system() -> SettableClock:
    return SettableClock()


@pytest.fixture
def clock(tmp_path: Path, system: SettableClock) -> TrustedClock:
    return TrustedClock(tmp_path / "trusted_time", system_clock=system)


def test_with_nothing_recorded_the_system_clock_decides_quietly(
    clock: TrustedClock, caplog: pytest.LogCaptureFixture
) -> None:
    assert clock.recorded() is None
    assert clock.now() == TODAY
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_clock_set_back_to_1970_still_sees_the_recorded_time(
    clock: TrustedClock, system: SettableClock
) -> None:
    assert clock.vouch(not_after=EXPIRES)
    system.at = datetime(1970, 1, 2, tzinfo=UTC)
    assert clock.now() == TODAY


def test_the_recorded_time_only_moves_forward(clock: TrustedClock, system: SettableClock) -> None:
    clock.vouch(not_after=EXPIRES)
    system.at = TODAY - timedelta(hours=3)
    assert not clock.vouch(not_after=EXPIRES)
    assert clock.recorded() == TODAY
    system.at = TODAY + timedelta(hours=3)
    assert clock.vouch(not_after=EXPIRES)
    assert clock.recorded() == TODAY + timedelta(hours=3)


@pytest.mark.parametrize("torn", [b"2026-11-2", b"", b"\xff\xfe\x00garbage"])
def test_a_torn_file_counts_as_nothing_recorded_until_the_next_refresh(
    clock: TrustedClock, system: SettableClock, torn: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    clock.path.write_bytes(torn)
    assert clock.recorded() is None
    assert clock.now() == TODAY
    assert "using the system clock" in caplog.text
    assert clock.vouch(not_after=EXPIRES)
    assert clock.recorded() == TODAY


def test_a_clock_far_ahead_is_not_recorded_as_the_truth(
    clock: TrustedClock, system: SettableClock
) -> None:
    clock.vouch(not_after=EXPIRES)
    system.at = datetime(2100, 1, 1, tzinfo=UTC)
    assert not clock.vouch(not_after=EXPIRES)
    system.at = TODAY + timedelta(minutes=5)  # the clock is right again
    assert clock.recorded() == TODAY
    assert clock.now() == TODAY + timedelta(minutes=5)


def test_a_time_without_a_zone_is_read_as_utc(clock: TrustedClock) -> None:
    clock.path.write_text("2026-11-27T12:00:00")
    assert clock.recorded() == TODAY
