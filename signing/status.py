"""What every role's metadata says right now, and how long until it expires.

`repo_status` reads the live repository the way a client does (`load_state`) and turns it
into one `RoleStatus` per role; `assess` is pure and decides which roles need attention:
a warning when a role expires within its margin, an error when it already has.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from signing.state import RepoState, load_state
from signing.storage import Storage
from signing.tufmeta import TOP_LEVEL_ROLES, rfc3339, utc_now


@dataclass(frozen=True)
class WarnMargins:
    """How long before its expiry a role is reported as about to expire."""

    root: timedelta = timedelta(days=30)
    targets: timedelta = timedelta(days=14)
    snapshot: timedelta = timedelta(days=2)
    timestamp: timedelta = timedelta(hours=6)

    def margin(self, role: str) -> timedelta:
        """Top-level roles have their own margin; delegated roles use targets'."""
        value = getattr(self, role, self.targets)
        return value if isinstance(value, timedelta) else self.targets


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int
    expires: datetime
    threshold: int
    keyids: tuple[str, ...]
    problem: str = ""  # "" | "warning" | "expired"
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["expires"] = rfc3339(self.expires)
        data["keyids"] = list(self.keyids)
        return data


def role_statuses(state: RepoState) -> list[RoleStatus]:
    """Version, expiry, threshold and key ids of each top-level role (no judgement yet)."""
    root = state.root.signed
    found = {
        "root": state.root,
        "targets": state.targets,
        "snapshot": state.snapshot,
        "timestamp": state.timestamp,
    }
    return [
        RoleStatus(
            role=role,
            version=found[role].signed.version,
            expires=found[role].signed.expires,
            threshold=root.roles[role].threshold,
            keyids=tuple(root.roles[role].keyids),
        )
        for role in TOP_LEVEL_ROLES
    ] + [_delegated(state, name) for name in sorted(state.delegated)]


def _delegated(state: RepoState, name: str) -> RoleStatus:
    md, delegator = state.delegated[name]
    role = delegator.get_delegated_role(name)
    return RoleStatus(
        name, md.signed.version, md.signed.expires, role.threshold, tuple(role.keyids)
    )


def assess(statuses: list[RoleStatus], now: datetime, margins: WarnMargins) -> list[RoleStatus]:
    """Each status with `problem` and `message` set from how far away its expiry is."""
    judged = []
    for status in statuses:
        left = status.expires - now
        if left <= timedelta(0):
            problem, message = "expired", f"{status.role} expired {rfc3339(status.expires)}"
        elif left < margins.margin(status.role):
            problem = "warning"
            message = f"{status.role} expires in {_human(left)} ({rfc3339(status.expires)})"
        else:
            problem, message = "", ""
        judged.append(_replace(status, problem, message))
    return judged


def _replace(status: RoleStatus, problem: str, message: str) -> RoleStatus:
    return RoleStatus(**{**status.__dict__, "problem": problem, "message": message})


def _human(left: timedelta) -> str:
    hours = left.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def repo_status(
    storage: Storage, *, now: datetime | None = None, margins: WarnMargins | None = None
) -> list[RoleStatus]:
    """The live repository's roles, judged against `margins` at `now`."""
    state = load_state(storage)
    return assess(role_statuses(state), now or utc_now(), margins or WarnMargins())
