"""The simulated bootloader's environment and its rules, as pure functions over plain data.

`SimDevice` (hardware/sim.py) stores one `BootEnv` in `bootenv.json` and calls these; the
hypothesis tests drive them directly. The rules are U-Boot's bootcount/bootlimit and the
Raspberry Pi's tryboot, reduced to what an A/B updater relies on:

- a trial armed with attempts left boots the trial slot and uses one attempt;
- a trial with no attempts left (or marked unbootable) is dropped and the committed slot boots;
- a normal boot (no trial) counts nothing, so brown-outs never move the device off its slot;
- a slot marked unbootable is never booted, unless nothing else is left: then the committed
  slot boots anyway (a device that boots something beats a brick);
- the committed slot can only be replaced by `commit_running` on a slot that booted on trial.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from hardware.bootcontrol import BootControlError, BootStatus, Slot

ENV_FORMAT = 1


@dataclass(frozen=True)
class BootEnv:
    committed: Slot = Slot.A  # what the bootloader falls back to
    active: Slot = Slot.A  # what booted last (the running slot)
    trial: Slot | None = None  # armed or running trial slot
    attempts_left: int = 0  # trial boots still allowed
    max_attempts: int = 3
    unbootable: frozenset[Slot] = field(default_factory=frozenset)
    boots: int = 0  # every power-on, for tests
    model: str = "sim"


def provisioned_env(max_attempts: int, model: str) -> BootEnv:
    """A fresh device: slot a committed and running, slot b empty and so never booted."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    return BootEnv(max_attempts=max_attempts, unbootable=frozenset({Slot.B}), model=model)


# --------------------------------------------------------------------------- bootloader


def power_on(env: BootEnv) -> BootEnv:
    """What the bootloader does at power-on: pick a slot, spend a trial attempt if any."""
    booted = env.boots + 1
    trial = env.trial
    if trial is not None and trial not in env.unbootable and env.attempts_left > 0:
        return replace(env, active=trial, attempts_left=env.attempts_left - 1, boots=booted)
    fallback = _fallback_slot(env)
    return replace(env, active=fallback, trial=None, attempts_left=0, boots=booted)


def _fallback_slot(env: BootEnv) -> Slot:
    if env.committed not in env.unbootable:
        return env.committed
    other = env.committed.other
    if other not in env.unbootable and other != env.trial:
        return other
    return env.committed  # everything exhausted: the last committed slot still boots


# --------------------------------------------------------------------------- the OS's requests


def arm_trial(env: BootEnv, slot: Slot) -> BootEnv:
    """Arm `slot` for trial boots; the committed slot stays the fallback."""
    if slot == env.committed:
        raise BootControlError(f"slot {slot} is the committed slot; there is nothing to try")
    return replace(
        env, trial=slot, attempts_left=env.max_attempts, unbootable=env.unbootable - {slot}
    )


def commit_running(env: BootEnv) -> BootEnv:
    """Make the running slot the committed one (after its health check passed)."""
    if env.active == env.committed:
        return env  # already committed: marking good again changes nothing
    if env.active in env.unbootable:
        raise BootControlError(f"slot {env.active} is marked unbootable; it cannot be committed")
    return replace(env, committed=env.active, trial=None, attempts_left=0)


def mark_slot_bad(env: BootEnv, slot: Slot) -> BootEnv:
    """Never boot `slot` again until it is armed for a trial; cancels a trial of it."""
    if slot == env.committed:
        raise BootControlError(
            f"slot {slot} is the committed slot; marking it unbootable would leave "
            "nothing to fall back to"
        )
    trial, attempts = (None, 0) if env.trial == slot else (env.trial, env.attempts_left)
    return replace(env, unbootable=env.unbootable | {slot}, trial=trial, attempts_left=attempts)


def boot_status(env: BootEnv) -> BootStatus:
    on_trial = env.active != env.committed
    pending = env.trial if env.trial is not None and env.trial != env.active else None
    return BootStatus(
        active=env.active,
        committed=env.committed,
        trial=on_trial,
        attempts_left=env.attempts_left if env.trial is not None else 0,
        pending_trial=pending,
    )


# --------------------------------------------------------------------------- (de)serialising


def env_to_json(env: BootEnv) -> bytes:
    data = {
        "format": ENV_FORMAT,
        "committed": env.committed.value,
        "active": env.active.value,
        "trial": None if env.trial is None else env.trial.value,
        "attempts_left": env.attempts_left,
        "max_attempts": env.max_attempts,
        "unbootable": sorted(s.value for s in env.unbootable),
        "boots": env.boots,
        "model": env.model,
    }
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


def env_from_json(raw: bytes) -> BootEnv:
    """Parse bootenv.json; anything malformed raises BootControlError."""
    try:
        data = json.loads(raw)
        return _env_from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise BootControlError(f"bootenv.json is malformed: {exc}") from None


def _env_from_dict(data: dict[str, Any]) -> BootEnv:
    if data["format"] != ENV_FORMAT:
        raise ValueError(f"unknown format {data['format']!r}")
    trial = data["trial"]
    return BootEnv(
        committed=Slot(data["committed"]),
        active=Slot(data["active"]),
        trial=None if trial is None else Slot(trial),
        attempts_left=int(data["attempts_left"]),
        max_attempts=int(data["max_attempts"]),
        unbootable=frozenset(Slot(s) for s in data["unbootable"]),
        boots=int(data["boots"]),
        model=str(data["model"]),
    )
