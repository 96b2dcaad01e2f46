"""Update policies: the window (also across midnight), the battery from a fake sysfs, the
metered network and the user, and the `[policy]` table that configures them."""

from __future__ import annotations

import sys
import time as time_module
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.policy import (
    AskUserPolicy,
    BatteryPolicy,
    CommandAsker,
    CommandMeteredProbe,
    MaintenanceWindow,
    MeteredNetworkPolicy,
    UpdatePolicy,
    evaluate_policies,
    policies_from_config,
    read_batteries,
)

NOON = datetime(2026, 11, 27, 12, 0)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 27, hour, minute)


# --------------------------------------------------------------------------- window


@pytest.mark.parametrize(
    ("start", "end", "inside", "outside"),
    [
        (time(2), time(5), [at(2), at(4, 59)], [at(1, 59), at(5), at(12)]),
        (time(22), time(4), [at(22), at(23, 59), at(0), at(3, 59)], [at(4), at(12), at(21, 59)]),
        (time(3), time(3), [at(0), at(3), at(23, 59)], []),
    ],
)
def test_the_window(
    start: time, end: time, inside: list[datetime], outside: list[datetime]
) -> None:
    window = MaintenanceWindow(start, end)
    for moment in inside:
        assert window.check(moment) is None, moment
    for moment in outside:
        assert window.check(moment) == f"outside the maintenance window {start:%H:%M}-{end:%H:%M}"


def _seconds(moment: time) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second


times = st.times().map(lambda t: t.replace(microsecond=0))


@given(times, times, times)
def test_the_window_is_the_stretch_from_start_to_end_across_midnight(
    start: time, end: time, moment: time
) -> None:
    day = 24 * 3600
    length = (_seconds(end) - _seconds(start)) % day or day  # start == end: the whole day
    since_start = (_seconds(moment) - _seconds(start)) % day
    assert MaintenanceWindow(start, end).contains(moment) == (since_start < length)


@given(times, times, times)
def test_a_wrapping_window_is_the_complement_of_its_reverse(
    start: time, end: time, moment: time
) -> None:
    if start == end:
        return
    forward = MaintenanceWindow(start, end).contains(moment)
    backward = MaintenanceWindow(end, start).contains(moment)
    assert forward != backward


@pytest.fixture
def in_shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The device's zone is UTC+8 for this test."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time_module.tzset()
    yield
    monkeypatch.undo()
    time_module.tzset()


@pytest.mark.usefixtures("in_shanghai")
def test_an_aware_time_is_read_in_device_local_time() -> None:
    three_am_local_in_utc = datetime(2026, 11, 26, 19, 0, tzinfo=UTC)
    window = MaintenanceWindow(time(2), time(4))
    assert window.check(three_am_local_in_utc) is None
    assert window.check(datetime(2026, 11, 27, 3, 0, tzinfo=UTC)) is not None  # 11:00 local


# --------------------------------------------------------------------------- battery


def supply(root: Path, name: str, **attributes: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for attribute, value in attributes.items():
        (folder / attribute).write_text(value + "\n")


def test_no_battery_is_never_deferred(tmp_path: Path) -> None:
    supply(tmp_path, "AC", type="Mains", online="1")
    assert BatteryPolicy(50, require_charging=True, power_supply_dir=tmp_path).check(NOON) is None
    assert BatteryPolicy(50, power_supply_dir=tmp_path / "absent").check(NOON) is None


def test_a_low_battery_defers(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", capacity="12", status="Discharging")
    assert BatteryPolicy(30, power_supply_dir=tmp_path).check(NOON) == "battery at 12%, below 30%"
    assert BatteryPolicy(10, power_supply_dir=tmp_path).check(NOON) is None


@pytest.mark.parametrize(
    ("status", "mains_online", "allowed"),
    [
        ("Charging", "0", True),
        ("Full", "0", True),
        ("Discharging", "0", False),
        ("Not charging", "1", True),  # plugged in, charge held back (a full-ish laptop)
    ],
)
def test_require_charging(tmp_path: Path, status: str, mains_online: str, allowed: bool) -> None:
    supply(tmp_path, "BAT0", type="Battery", capacity="80", status=status)
    supply(tmp_path, "AC", type="Mains", online=mains_online)
    reason = BatteryPolicy(30, require_charging=True, power_supply_dir=tmp_path).check(NOON)
    assert (reason is None) == allowed
    if not allowed:
        assert reason == "not charging"


def test_peripheral_absent_and_unreadable_batteries_do_not_count(tmp_path: Path) -> None:
    supply(tmp_path, "hid-mouse-battery", type="Battery", scope="Device", capacity="3")
    supply(tmp_path, "BAT1", type="Battery", present="0", capacity="0")
    supply(tmp_path, "BAT2", type="Battery", capacity="garbage")
    supply(tmp_path, "BAT0", type="Battery", capacity="64", status="Discharging")
    assert [b.capacity for b in read_batteries(tmp_path)] == [64]
    assert BatteryPolicy(50, power_supply_dir=tmp_path).check(NOON) is None


def test_with_two_batteries_the_lowest_counts(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", capacity="90")
    supply(tmp_path, "BAT1", type="Battery", capacity="20")
    assert BatteryPolicy(30, power_supply_dir=tmp_path).check(NOON) == "battery at 20%, below 30%"


# --------------------------------------------------------------------------- network, user


def test_metered_network() -> None:
    assert MeteredNetworkPolicy(lambda: True).check(NOON) == "on a metered network"
    assert MeteredNetworkPolicy(lambda: False).check(NOON) is None


def test_asking_the_user_and_the_snooze_after_a_no() -> None:
    answers = [False, True]
    asked: list[str] = []

    def ask(question: str) -> bool:
        asked.append(question)
        return answers.pop(0)

    policy = AskUserPolicy(ask, snooze=timedelta(hours=2))
    assert policy.check(at(9)) == "the user said not now"
    assert policy.check(at(10)) == "the user said not now (asking again after 11:00)"
    assert len(asked) == 1  # not pestered during the snooze
    assert policy.check(at(11)) is None
    assert len(asked) == 2
    assert "Install it now?" in asked[0]


def test_command_probes(tmp_path: Path) -> None:
    says = [sys.executable, "-c", "import sys; sys.exit(0 if sys.argv[-1] == 'yes?' else 1)"]
    assert CommandAsker(says)("yes?")
    assert not CommandAsker(says)("no?")
    assert not CommandAsker([str(tmp_path / "missing")])("anything?")  # cannot ask: a no
    assert CommandMeteredProbe([sys.executable, "-c", "pass"])()
    assert not CommandMeteredProbe([sys.executable, "-c", "raise SystemExit(1)"])()
    assert CommandMeteredProbe([str(tmp_path / "missing")])()  # cannot tell: assume metered


# --------------------------------------------------------------------------- together


class Recording:
    def __init__(self, name: str, reason: str | None, log: list[str]) -> None:
        self.name = name
        self._reason = reason
        self._log = log

    def check(self, now: datetime) -> str | None:
        self._log.append(self.name)
        return self._reason


def test_the_first_reason_wins_and_later_policies_are_not_asked() -> None:
    log: list[str] = []
    policies: list[UpdatePolicy] = [
        Recording("window", None, log),
        Recording("battery", "battery at 5%", log),
        Recording("ask", "no", log),
    ]
    assert evaluate_policies(policies, NOON) == "battery at 5%"
    assert log == ["window", "battery"]
    assert evaluate_policies([], NOON) is None


def test_policies_from_config_in_order_with_the_user_last(tmp_path: Path) -> None:
    policies = policies_from_config(
        {
            "ask": {"command": ["ask-user"], "snooze_minutes": 30, "question": "Now?"},
            "metered": {"command": ["on-metered"]},
            "battery": {"min_percent": 30, "require_charging": True, "power_supply_dir": "/x"},
            "window": {"start": "22:00", "end": time(4, 30)},
        }
    )
    assert [type(p) for p in policies] == [
        MaintenanceWindow,
        BatteryPolicy,
        MeteredNetworkPolicy,
        AskUserPolicy,
    ]
    window, battery, _metered, ask = policies
    assert isinstance(window, MaintenanceWindow)
    assert (window.start, window.end) == (time(22), time(4, 30))
    assert isinstance(battery, BatteryPolicy)
    assert (battery.min_percent, battery.require_charging) == (30, True)
    assert battery.power_supply_dir == Path("/x")
    assert isinstance(ask, AskUserPolicy)
    assert (ask.snooze, ask.question) == (timedelta(minutes=30), "Now?")
    assert policies_from_config({}) == []


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ({"quiet_hours": {}}, "unknown tables"),
        ({"window": "02:00-05:00"}, "must be a table"),
        ({"window": {"start": "02:00"}}, "missing key 'end'"),
        ({"window": {"start": "2am", "end": "05:00"}}, "window"),
        ({"window": {"start": 2, "end": "05:00"}}, "time of day"),
        ({"battery": {"min_percent": "30"}}, "min_percent"),
        ({"battery": {"min_percent": 130}}, "0..100"),
        ({"battery": {"min_percent": True}}, "min_percent"),
        ({"battery": {"min_percent": 30, "charging": True}}, "unknown keys"),
        ({"metered": {"command": "nmcli"}}, "non-empty list"),
        ({"ask": {"command": []}}, "non-empty list"),
    ],
)
def test_a_bad_policy_table_is_a_config_error(config: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        policies_from_config(config)
