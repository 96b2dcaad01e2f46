"""Which devices are in a staged rollout: each device computes its own stable bucket.

The server publishes one number (the percentage) per rollout; the broker fans it out; every
device hashes its id with the rollout id and installs when its bucket is below the number.
The server's cost does not grow with the fleet, and a device in the 10 % wave is in every
later wave, because the bucket does not change while the percentage only goes up.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000  # resolution: 0.01 %


def bucket(device_id: str, rollout_id: str) -> int:
    """Stable bucket in [0, BUCKETS) for this device in this rollout."""
    digest = hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_rollout(device_id: str, rollout_id: str, percentage: float) -> bool:
    """True when the device falls inside the first `percentage` % of the rollout."""
    if percentage >= 100:
        return True
    if percentage <= 0:
        return False
    return bucket(device_id, rollout_id) < round(percentage * BUCKETS / 100)
