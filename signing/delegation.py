"""Where a release's target is signed: one delegated role per channel, hashed bins past a size.

Top-level targets (offline keys) signs no releases itself: it delegates `*/<channel>/*/*`
to a role named after the channel, with that channel's own keys, as a terminating
delegation. A device looking up `rpi4/stable/...` consults only the `stable` role, so a
leaked preview key can sign nothing a stable device will install. When a channel role would
hold more than `bin_threshold` targets it is split into 2^bits hashed bins (python-tuf's
SuccinctRoles, TAP 15) signed by the channel's keys, so a device fetches one small bin
instead of the whole channel's history.

`plan_release` is pure: it returns the new versions of every role that changes, which the
caller signs and writes (role files, snapshot, timestamp.json last).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from securesystemslib.signer import Key  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    DelegatedRole,
    Delegations,
    Metadata,
    SuccinctRoles,
    TargetFile,
    Targets,
)

from signing.errors import PublishError
from signing.renew import next_version
from signing.state import RepoState
from signing.tufmeta import TOP_LEVEL_ROLES

__all__ = ["DelegationPolicy", "Plan", "channel_pattern", "plan_channel", "plan_release"]

_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
BIN_PREFIX = "{channel}.bin"


@dataclass(frozen=True)
class DelegationPolicy:
    """A channel role holding more than `bin_threshold` targets is split into 2**bin_bits bins."""

    bin_threshold: int = 512
    bin_bits: int = 5

    def __post_init__(self) -> None:
        if self.bin_threshold < 1 or not 1 <= self.bin_bits <= 16:
            raise ValueError("bin_threshold must be positive and bin_bits between 1 and 16")


@dataclass
class Plan:
    """New versions of the targets-type roles a change touches, and who delegates each."""

    state: RepoState
    edits: dict[str, Metadata[Any]] = field(default_factory=dict)
    delegators: dict[str, Any] = field(default_factory=dict)
    key_role: dict[str, str] = field(default_factory=dict)  # bins use their channel's keys
    role: str = ""  # where the release's target went

    def edit(self, name: str, expires: datetime) -> Metadata[Any]:
        if name not in self.edits:
            self.edits[name] = next_version(self.state.role(name), expires)
            self.delegators.setdefault(name, self.state.delegator(name))
        return self.edits[name]


def channel_pattern(channel: str) -> str:
    """The delegated path pattern of a channel: `<model>/<channel>/<version>/<file>`."""
    return f"*/{channel}/*/*"


def check_channel(channel: str) -> None:
    if not _CHANNEL.fullmatch(channel) or channel in TOP_LEVEL_ROLES or ".bin" in channel:
        raise PublishError(
            f"invalid channel name {channel!r}: use letters, digits, '.', '_' or '-' "
            "(not a top-level role name)"
        )


def channel_role(state: RepoState, path: str) -> str | None:
    """The delegated role whose paths match `path`, or None."""
    delegations = state.targets.signed.delegations
    for role in (delegations.roles or {}).values() if delegations else ():
        if role.is_delegated_path(path):
            return str(role.name)
    return None


def plan_channel(
    state: RepoState, channel: str, keys: Sequence[Key], threshold: int, expires: datetime
) -> Plan:
    """Delegate `channel`'s paths from top-level targets to a new role with `keys`."""
    check_channel(channel)
    if channel in state.delegated:
        raise PublishError(f"channel {channel} already has its own role")
    plan = Plan(state)
    targets = plan.edit("targets", expires)
    if targets.signed.delegations is None:
        targets.signed.delegations = Delegations(keys={}, roles={})
    role = DelegatedRole(channel, [], threshold, True, [channel_pattern(channel)])
    targets.signed.delegations.roles[channel] = role
    for key in keys:
        targets.signed.add_key(key, channel)
    plan.edits[channel] = Metadata(Targets(version=1, expires=expires))
    plan.delegators[channel] = targets.signed
    plan.key_role[channel] = channel
    return plan


def plan_release(
    plan: Plan, target: TargetFile, policy: DelegationPolicy, expires: datetime, *, split: bool
) -> Plan:
    """Add `target` to its channel's role (or bin); split the channel into bins when it
    grows past the policy (only when `split`: a staged release changes one role only)."""
    channel = _channel_of(plan, target.path)
    md = plan.edits.get(channel) or plan.state.role(channel)
    succinct = md.signed.delegations.succinct_roles if md.signed.delegations else None
    if succinct is not None:
        name = succinct.get_role_for_target(target.path)
        plan.key_role[name] = channel
        plan.edit(name, expires).signed.targets[target.path] = target
        plan.role = name
        return plan
    md = plan.edit(channel, expires)
    md.signed.targets[target.path] = target
    plan.key_role.setdefault(channel, channel)
    plan.role = channel
    if split and len(md.signed.targets) > policy.bin_threshold:
        plan.role = _split(plan, channel, md, policy.bin_bits, expires, target.path)
    return plan


def _channel_of(plan: Plan, path: str) -> str:
    new = plan.edits.get("targets")
    state = plan.state if new is None else _with_targets(plan.state, new)
    name = channel_role(state, path)
    if name is None:
        raise PublishError(f"no role signs {path}: add its channel with `ota keys add-channel`")
    return name


def _with_targets(state: RepoState, targets: Metadata[Any]) -> RepoState:
    return RepoState(state.root, state.timestamp, state.snapshot, targets, state.delegated)


def _split(
    plan: Plan, channel: str, md: Metadata[Any], bits: int, expires: datetime, path: str
) -> str:
    """Move every target of `channel` into hashed bins that the channel delegates to;
    return the bin `path` went to."""
    role = plan.delegators[channel].get_delegated_role(channel)
    keys = {k: plan.delegators[channel].get_key(k) for k in role.keyids}
    prefix = BIN_PREFIX.format(channel=channel)
    succinct = SuccinctRoles(list(role.keyids), role.threshold, bits, prefix)
    md.signed.delegations = Delegations(keys=keys, succinct_roles=succinct)
    for name in succinct.get_roles():
        plan.edits[name] = Metadata(Targets(version=1, expires=expires))
        plan.delegators[name] = md.signed
        plan.key_role[name] = channel
    for path, target in md.signed.targets.items():
        plan.edits[succinct.get_role_for_target(path)].signed.targets[path] = target
    md.signed.targets = {}
    return str(succinct.get_role_for_target(path))
