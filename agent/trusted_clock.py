"""The latest time this device knows to be true, so a clock reset cannot revive old metadata.

python-tuf checks expiry against the system clock. A device whose clock falls back to 1970
(a dead RTC battery, a reset) would then take expired metadata for fresh, which is the
freeze attack TUF's expiry exists to stop. The agent remembers the latest system time at
which a refresh succeeded (a time the repository's signed expiry vouched for) and checks
expiry against the later of that and the system clock. It only moves forward, and only
after a refresh that python-tuf accepted at that time, so a clock that runs ahead never
gets recorded (python-tuf refuses the then-expired metadata first).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from durable import atomic_write


class TrustedClock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def recorded(self) -> datetime | None:
        try:
            text = self.path.read_text().strip()
            return datetime.fromisoformat(text).astimezone(UTC)
        except (OSError, ValueError):
            return None  # never recorded, or torn: the system clock alone decides

    def now(self, system_now: datetime | None = None) -> datetime:
        """The later of the system clock and the latest trusted time."""
        system = system_now or datetime.now(UTC)
        recorded = self.recorded()
        return system if recorded is None or system >= recorded else recorded

    def vouch(self, system_now: datetime | None = None) -> None:
        """A refresh succeeded at `system_now`: remember it if it is later than what we had."""
        system = system_now or datetime.now(UTC)
        recorded = self.recorded()
        if recorded is None or system > recorded:
            atomic_write(self.path, system.isoformat().encode(), mode=0o644)
