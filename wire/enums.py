"""The enums that go into reports and commands, so the server can count failures by cause."""

from __future__ import annotations

import enum


class UpdateState(enum.StrEnum):
    """The agent's persisted states; every report names the state it entered."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    INSTALLED = "installed"  # slot written, length + hash matched, not yet bootable
    REBOOTING = "rebooting"  # trial boot of the new slot armed
    TRIAL = "trial"  # running the new slot, health check pending
    COMMITTED = "committed"  # new slot marked good
    ROLLING_BACK = "rolling_back"  # trial failed (health check); rebooting into the old slot
    ROLLED_BACK = "rolled_back"  # back on the old slot after a failed trial
    FAILED = "failed"  # update abandoned before the slot became bootable
    DEFERRED = "deferred"  # a device policy said "not now"


class FailureReason(enum.StrEnum):
    """Why an update did not go through. Goes into reports; the server counts by it."""

    NONE = ""
    METADATA = "metadata"  # TUF refresh failed (signature, expiry, rollback, ...)
    TARGET_NOT_FOUND = "target_not_found"
    WRONG_MODEL = "wrong_model"
    WRONG_CHANNEL = "wrong_channel"  # signed for (or delegated by) another channel's role
    DOWNGRADE = "downgrade"  # version or release counter not above the running build's
    DOWNLOAD = "download"  # transport failed after retries
    HASH_MISMATCH = "hash_mismatch"
    LENGTH_MISMATCH = "length_mismatch"
    SLOT_TOO_SMALL = "slot_too_small"
    DISK_FULL = "disk_full"
    BOOT_FAILED = "boot_failed"  # bootloader fell back to the old slot
    HEALTH_CHECK = "health_check"
    CANCELLED = "cancelled"
    POLICY = "policy"
    INTERNAL = "internal"


class CommandKind(enum.StrEnum):
    CHECK_NOW = "check_now"
    CANCEL = "cancel"
    ROLLBACK = "rollback"
