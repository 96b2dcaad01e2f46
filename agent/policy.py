"""Update policies a device owner sets: conditions that defer an install, each saying why.

A policy answers None when an install may start now, else the reason it may not; the runner
then journals DEFERRED with that reason, reports it, and asks again on the next poll.
Policies are checked only before an update starts: once the slot is being written, the
update runs to its end.

Configured in the agent's TOML (every table optional; checked in this order):

    [policy.window]         # device-local time; may wrap midnight; start == end: all day
    start = "02:00"
    end = "05:00"

    [policy.battery]        # devices without a battery are never deferred by this
    min_percent = 30
    require_charging = false

    [policy.metered]        # the command exits 0 when the network is metered
    command = ["/usr/local/bin/on-metered-network"]

    [policy.ask]            # asked last; the question is appended; exit 0 = "yes, now"
    command = ["/usr/local/bin/ask-user"]
    snooze_minutes = 240    # after a "no", don't ask again for this long
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from agent.errors import ConfigError

log = logging.getLogger(__name__)

SYS_POWER_SUPPLY: Final = Path("/sys/class/power_supply")
COMMAND_TIMEOUT_S: Final = 30.0
ASK_TIMEOUT_S: Final = 300.0  # a person may take a moment
_DAY: Final = timedelta(days=1)


class UpdatePolicy(Protocol):
    name: str

    def check(self, now: datetime) -> str | None:
        """None when an install may start at `now`, else the reason it may not."""
        ...


def evaluate_policies(policies: Sequence[UpdatePolicy], now: datetime) -> str | None:
    """The first reason any policy gives (later ones are not asked), or None."""
    for policy in policies:
        reason = policy.check(now)
        if reason is not None:
            return reason
    return None


# --------------------------------------------------------------------------- the window


@dataclass
class MaintenanceWindow:
    """Installs start only between `start` (inclusive) and `end` (exclusive), device-local.

    `start > end` wraps midnight (22:00-04:00); `start == end` is the whole day.
    """

    start: time
    end: time
    name: str = "maintenance window"

    def contains(self, moment: time) -> bool:
        begin, finish, at = _offset(self.start), _offset(self.end), _offset(moment)
        if begin == finish:
            return True
        return (at - begin) % _DAY < (finish - begin) % _DAY

    def check(self, now: datetime) -> str | None:
        local = now.astimezone() if now.tzinfo is not None else now  # device-local
        if self.contains(local.time()):
            return None
        return f"outside the maintenance window {_hhmm(self.start)}-{_hhmm(self.end)}"


def _offset(moment: time) -> timedelta:
    return timedelta(
        hours=moment.hour,
        minutes=moment.minute,
        seconds=moment.second,
        microseconds=moment.microsecond,
    )


def _hhmm(moment: time) -> str:
    return moment.strftime("%H:%M")


# --------------------------------------------------------------------------- the battery


@dataclass(frozen=True)
class BatteryReading:
    capacity: int  # percent
    status: str  # "Charging", "Discharging", "Full", "Not charging", "Unknown"


@dataclass
class BatteryPolicy:
    """Defer while the battery is below `min_percent` (or, if required, not charging).

    Reads the kernel's power supply class: supplies of type Battery, ignoring peripherals'
    batteries (scope Device, e.g. a wireless mouse) and absent ones. With several batteries
    the lowest counts. No battery at all (a Pi on mains): never deferred.
    """

    min_percent: int
    require_charging: bool = False
    power_supply_dir: Path = SYS_POWER_SUPPLY
    name: str = "battery"

    def check(self, now: datetime) -> str | None:
        batteries = read_batteries(self.power_supply_dir)
        if not batteries:
            return None
        lowest = min(b.capacity for b in batteries)
        if lowest < self.min_percent:
            return f"battery at {lowest}%, below {self.min_percent}%"
        if self.require_charging and not self._on_external_power(batteries):
            return "not charging"
        return None

    def _on_external_power(self, batteries: list[BatteryReading]) -> bool:
        if any(b.status in ("Charging", "Full") for b in batteries):
            return True
        return any(_read(p, "online") == "1" for p in _supplies(self.power_supply_dir, False))


def read_batteries(power_supply_dir: Path) -> list[BatteryReading]:
    """The system's batteries that can be read; unreadable ones are left out."""
    readings = []
    for supply in _supplies(power_supply_dir, True):
        try:
            capacity = int(_read(supply, "capacity"))
        except ValueError:
            log.debug("battery %s: no readable capacity", supply.name)
            continue
        readings.append(BatteryReading(max(0, min(capacity, 100)), _read(supply, "status")))
    return readings


def _supplies(power_supply_dir: Path, batteries: bool) -> list[Path]:
    """System batteries (or, with batteries=False, the other supplies: mains, USB)."""
    if not power_supply_dir.is_dir():
        return []
    found = []
    for supply in sorted(power_supply_dir.iterdir()):
        if (_read(supply, "type") == "Battery") != batteries or _read(supply, "scope") == "Device":
            continue
        if batteries and _read(supply, "present") == "0":
            continue
        found.append(supply)
    return found


def _read(supply: Path, attribute: str) -> str:
    """A sysfs attribute, stripped; "" when it is missing or unreadable."""
    try:
        return (supply / attribute).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


# --------------------------------------------------------------------------- network, user


@dataclass
class MeteredNetworkPolicy:
    """Defer while `is_metered()` says the network costs the owner money."""

    is_metered: Callable[[], bool]
    name: str = "metered network"

    def check(self, now: datetime) -> str | None:
        return "on a metered network" if self.is_metered() else None


@dataclass
class AskUserPolicy:
    """Ask the person using the device; after a "no", don't ask again for `snooze`."""

    ask: Callable[[str], bool]
    question: str = "A system update is ready. Install it now? The device will restart."
    snooze: timedelta = timedelta(hours=4)
    name: str = "ask user"
    snoozed_until: datetime | None = field(default=None, init=False)

    def check(self, now: datetime) -> str | None:
        if self.snoozed_until is not None and now < self.snoozed_until:
            return f"the user said not now (asking again after {self.snoozed_until:%H:%M})"
        if self.ask(self.question):
            self.snoozed_until = None
            return None
        self.snoozed_until = now + self.snooze
        return "the user said not now"


# --------------------------------------------------------------------------- commands


@dataclass
class CommandMeteredProbe:
    """`is_metered` from a command: exit 0 = metered. A probe that fails counts as metered."""

    argv: list[str]

    def __call__(self) -> bool:
        return _command_says_yes(self.argv, COMMAND_TIMEOUT_S, if_broken=True)


@dataclass
class CommandAsker:
    """`ask` from a command: runs `argv + [question]`, exit 0 = yes. A failure is a "no"."""

    argv: list[str]

    def __call__(self, question: str) -> bool:
        return _command_says_yes([*self.argv, question], ASK_TIMEOUT_S, if_broken=False)


def _command_says_yes(argv: list[str], timeout_s: float, *, if_broken: bool) -> bool:
    try:
        done = subprocess.run(  # noqa: S603  # argv from the owner's config, no shell
            argv, capture_output=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("policy command %s failed (%s); taking it as %s", argv[0], exc, if_broken)
        return if_broken
    return done.returncode == 0


# --------------------------------------------------------------------------- configuration

_TABLE_KEYS: Final[dict[str, set[str]]] = {
    "window": {"start", "end"},
    "battery": {"min_percent", "require_charging", "power_supply_dir"},
    "metered": {"command"},
    "ask": {"command", "question", "snooze_minutes"},
}


def policies_from_config(config: dict[str, Any]) -> list[UpdatePolicy]:
    """The policies a `[policy]` table sets, cheapest first and the user asked last."""
    unknown = set(config) - set(_TABLE_KEYS)
    if unknown:
        raise ConfigError(f"[policy]: unknown tables {sorted(unknown)}")
    policies: list[UpdatePolicy] = []
    for table, build in _BUILDERS.items():
        if table in config:
            policies.append(_build(table, config[table], build))
    return policies


def _build(table: str, raw: Any, build: Callable[[dict[str, Any]], UpdatePolicy]) -> UpdatePolicy:
    where = f"[policy.{table}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - _TABLE_KEYS[table]
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        return build(raw)
    except KeyError as exc:
        raise ConfigError(f"{where}: missing key {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _window(raw: dict[str, Any]) -> UpdatePolicy:
    return MaintenanceWindow(_time_of_day(raw["start"]), _time_of_day(raw["end"]))


def _battery(raw: dict[str, Any]) -> UpdatePolicy:
    percent = _typed(raw["min_percent"], int, "min_percent")
    if not 0 <= percent <= 100:
        raise ValueError("min_percent must be within 0..100")
    return BatteryPolicy(
        min_percent=percent,
        require_charging=_typed(raw.get("require_charging", False), bool, "require_charging"),
        power_supply_dir=Path(_typed(raw.get("power_supply_dir", str(SYS_POWER_SUPPLY)), str)),
    )


def _metered(raw: dict[str, Any]) -> UpdatePolicy:
    return MeteredNetworkPolicy(CommandMeteredProbe(_argv(raw["command"])))


def _ask(raw: dict[str, Any]) -> UpdatePolicy:
    policy = AskUserPolicy(CommandAsker(_argv(raw["command"])))
    if "question" in raw:
        policy.question = _typed(raw["question"], str, "question")
    if "snooze_minutes" in raw:
        minutes = _typed(raw["snooze_minutes"], (int, float), "snooze_minutes")
        policy.snooze = timedelta(minutes=max(0, minutes))
    return policy


_BUILDERS: Final[dict[str, Callable[[dict[str, Any]], UpdatePolicy]]] = {
    "window": _window,
    "battery": _battery,
    "metered": _metered,
    "ask": _ask,
}


def _time_of_day(value: Any) -> time:
    """A TOML local time (02:00:00) or a string "HH:MM" / "HH:MM:SS"."""
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    if isinstance(value, str):
        return time.fromisoformat(value)
    raise TypeError(f'expected a time of day like "02:00", got {value!r}')


def _argv(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise TypeError(f"command must be a non-empty list of strings, got {value!r}")
    return list(value)


def _typed(value: Any, kind: type | tuple[type, ...], key: str = "value") -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(f"{key} has the wrong type: {value!r}")
    return value
