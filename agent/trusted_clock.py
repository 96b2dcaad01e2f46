"""The latest time this device knows to be true, so a clock reset cannot revive old metadata.

python-tuf checks expiry against the system clock. A device whose clock falls back to 1970
(a dead RTC battery, a reset) would then take expired metadata for fresh, which is the
freeze attack TUF's expiry exists to stop. The agent remembers the latest system time at
which a refresh succeeded (a time the repository's signed expiry vouched for) and checks
expiry against the later of that and the system clock.

What is recorded only moves forward, and only to a time the verified metadata allows: never
past the earliest expiry among it, so a clock running far ahead is not taken for the truth
(were it recorded, every later refresh would look expired until real time caught up). A torn
or unreadable file counts as nothing recorded (the system clock alone decides) until the next
refresh writes a good one. The system clock is injectable (`system_clock`), for tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from durable import atomic_write

log = logging.getLogger(__name__)

SystemClock = Callable[[], datetime]  # an aware datetime: what the device's clock says
TRUSTED_TIME_FILE = "trusted_time"  # in the agent's data directory


def system_now() -> datetime:
    return datetime.now(UTC)


class TrustedClock:
    """The trusted time kept in the file `path` (module docstring)."""

    def __init__(self, path: Path, *, system_clock: SystemClock = system_now) -> None:
        self.path = path
        self.system_clock = system_clock

    def recorded(self) -> datetime | None:
        """The latest trusted time; None when never recorded, or the file is unreadable."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None  # a device's first refresh
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            log.warning("trusted time %s unreadable (%s); using the system clock", self.path, exc)
            return None
        return self._parsed(text)

    def now(self) -> datetime:
        """The later of the system clock and the latest trusted time."""
        system = self.system_clock()
        recorded = self.recorded()
        return system if recorded is None or system >= recorded else recorded

    def vouch(self, *, not_after: datetime) -> bool:
        """A refresh just succeeded, its metadata valid until `not_after`: record the system
        clock's time if it is later than the recorded one and not past `not_after`. True if
        it was recorded."""
        system = self.system_clock()
        if system > not_after:
            log.warning(
                "the system clock says %s, past the signed metadata's expiry %s: not recorded"
                " as trusted time",
                *(system.isoformat(), not_after.isoformat()),
            )
            return False
        recorded = self.recorded()
        if recorded is not None and system <= recorded:
            return False
        atomic_write(self.path, system.isoformat().encode(), mode=0o644)
        return True

    def _parsed(self, text: str) -> datetime | None:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            log.warning("trusted time %s is torn (%r); using the system clock", self.path, text)
            return None
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
