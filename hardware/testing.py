"""Helpers for testing any BootControl backend, shipped with the package (structlog style):
the agent's install order in one call, the refusals every backend owes its caller, and the
simulated bootloader's rules driven one request at a time (for property tests)."""

from __future__ import annotations

from hardware.bootcontrol import BootControl, BootControlError, Slot
from hardware.sim_env import BootEnv, arm_trial, commit_running, mark_slot_bad, power_on

# ("arm", slot), ("bad", slot), ("good", None) or ("power_on", None)
BootRequest = tuple[str, Slot | None]


def apply_boot_request(env: BootEnv, request: BootRequest) -> BootEnv:
    """What the simulated bootloader's environment becomes after `request` (the OS asking to
    arm a trial, mark a slot bad or commit the running one, or a power-on). A request the
    rules refuse changes nothing."""
    kind, slot = request
    try:
        if kind == "arm" and slot is not None:
            return arm_trial(env, slot)
        if kind == "bad" and slot is not None:
            return mark_slot_bad(env, slot)
        if kind == "good":
            return commit_running(env)
    except BootControlError:
        return env
    return power_on(env)


def install_into_other_slot(boot: BootControl, payload: bytes) -> Slot:
    """RAUC's order: mark the inactive slot bad, write it, arm its trial. Returns the slot."""
    target = boot.status().active.other
    boot.mark_unbootable(target)
    with boot.open_slot(target) as sink:
        sink.write(payload)
        sink.flush()
    boot.set_trial(target)
    return target


def assert_refuses_unsafe_requests(boot: BootControl) -> None:
    """On a device running its committed slot: nothing may overwrite or disown what runs,
    and an armed trial slot may not be written until it is marked unbootable again."""
    running = boot.status().active
    for request in (boot.open_slot, boot.mark_unbootable, boot.set_trial):
        try:
            request(running)
        except BootControlError:
            continue
        raise AssertionError(f"{request.__name__}({running}) was not refused")
    boot.set_trial(running.other)
    try:
        boot.open_slot(running.other).close()
    except BootControlError:
        boot.mark_unbootable(running.other)
        return
    raise AssertionError("open_slot on an armed trial slot was not refused")
