"""How old each device's trusted TUF metadata is, and which devices count as stale.

Each poll carries the timestamp the device trusts (`wire.TrustedTimestamp`: version and
expiry). The served repository's timestamp is re-signed on a schedule with a fixed lifetime,
so the gap between the served expiry and the device's is how long ago the device's copy was
current: its age. A device is stale when that age passes the threshold, or when what it
trusts has expired (it then refuses every update). A freeze attack (someone replays old,
validly signed metadata to the device) and a device that cannot reach the repository look
the same from here, which is why both are flagged. An agent too old to say is "unknown",
never stale. Pure but for `served_timestamp`, which reads the served file once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import Device, utcnow
from server.services.freshness import UnreadableTimestampError, read_timestamp


@dataclass(frozen=True)
class TrustCheck:
    """The served timestamp (None: this server serves no readable repository), the age past
    which a device is stale, and the moment the check is made."""

    served: tuple[int, datetime] | None
    stale_after_s: float
    now: datetime

    def age_s(self, version: int | None, expires: datetime | None) -> float | None:
        """How far the trusted timestamp lags the served one (0: current); None: unknown."""
        if version is None or expires is None:
            return None
        if self.served is None:
            return max(0.0, (self.now - expires).total_seconds())
        served_version, served_expires = self.served
        if version >= served_version:
            return 0.0
        return max(0.0, (served_expires - expires).total_seconds())

    def is_stale(self, version: int | None, expires: datetime | None) -> bool:
        age = self.age_s(version, expires)
        if age is None or expires is None:
            return False
        return age > self.stale_after_s or expires <= self.now

    def device_age_s(self, device: Device) -> float | None:
        return self.age_s(device.trusted_ts_version, device.trusted_ts_expires)

    def device_is_stale(self, device: Device) -> bool:
        return self.is_stale(device.trusted_ts_version, device.trusted_ts_expires)

    def count_stale(self, devices: Iterable[Device]) -> int:
        return sum(1 for d in devices if self.device_is_stale(d))


def served_timestamp(repo_dir: Path | None) -> tuple[int, datetime] | None:
    if repo_dir is None:
        return None
    try:
        return read_timestamp(repo_dir)
    except UnreadableTimestampError:
        return None


def trust_check(repo_dir: Path | None, stale_after_s: float) -> TrustCheck:
    return TrustCheck(served_timestamp(repo_dir), stale_after_s, utcnow())


def count_stale_devices(session: Session, channel: str, model: str, trust: TrustCheck) -> int:
    """How many devices of `channel`+`model` trust stale metadata (a rollout's count)."""
    fleet = session.scalars(
        select(Device).where(
            Device.channel == channel,
            Device.model == model,
            Device.trusted_ts_version.is_not(None),
        )
    )
    return trust.count_stale(fleet)
