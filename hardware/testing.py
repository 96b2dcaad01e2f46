"""Helpers for testing any BootControl backend, shipped with the package (structlog style):
the agent's install order in one call, and the refusals every backend owes its caller."""

from __future__ import annotations

from hardware.bootcontrol import BootControl, BootControlError, Slot


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
