"""Hypothesis drives the simulated bootloader with random sequences of the agent's requests,
power-ons and power cuts, and checks what an unbrickable A/B device promises:

- the committed slot is always bootable and its bytes never change while it is committed;
- every boot lands on the committed slot or on a slot armed for trial, and a trial that is
  never marked good is booted at most `max_attempts` times before the device falls back;
- a power-on with no trial armed (a brown-out) never moves the device off its slot.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hardware.bootcontrol import BootControlError, Slot
from hardware.sim import FaultPlan, PowerCut, SimDevice
from hardware.sim_env import (
    BootEnv,
    arm_trial,
    commit_running,
    power_on,
    provisioned_env,
)
from hardware.testing import apply_boot_request

MAX_ATTEMPTS = 3
SLOT_SIZE = 64 * 1024
slots = st.sampled_from(list(Slot))


# --------------------------------------------------------------------------- pure rules

requests = st.lists(
    st.one_of(
        st.tuples(st.just("arm"), slots),
        st.tuples(st.just("bad"), slots),
        st.tuples(st.just("good"), st.none()),
        st.tuples(st.just("power_on"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=250)
@given(requests)
def test_pure_rules_keep_a_bootable_committed_slot(sequence: list[tuple[str, Slot | None]]) -> None:
    env = provisioned_env(MAX_ATTEMPTS, "m")
    trial_boots = 0
    for request in sequence:
        before = env
        env = apply_boot_request(env, request)
        assert env.committed not in env.unbootable
        if request[0] != "power_on":
            continue
        if env.active == env.committed:
            trial_boots = 0
            continue
        assert env.active == before.trial  # off the committed slot only on trial
        trial_boots = 1 if before.attempts_left == MAX_ATTEMPTS else trial_boots + 1
        assert trial_boots <= MAX_ATTEMPTS


@given(st.integers(min_value=1, max_value=20), st.sampled_from(list(Slot)))
def test_brownouts_without_a_trial_never_move_the_slot(brownouts: int, start: Slot) -> None:
    env = provisioned_env(MAX_ATTEMPTS, "m")
    if start is Slot.B:  # a device that updated once and now lives on b
        env = commit_running(power_on(arm_trial(env, Slot.B)))
    for _ in range(brownouts):
        env = power_on(env)
        assert (env.active, env.committed) == (start, start)


@given(st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=10))
def test_unconfirmed_trial_falls_back_within_max_attempts(max_attempts: int, extra: int) -> None:
    env = arm_trial(provisioned_env(max_attempts, "m"), Slot.B)
    assert _boot_many(env, max_attempts + 1 + extra) == [Slot.B] * max_attempts + [Slot.A] * (
        1 + extra
    )


def _boot_many(env: BootEnv, times: int) -> list[Slot]:
    booted = []
    for _ in range(times):
        env = power_on(env)
        booted.append(env.active)
    return booted


# --------------------------------------------------------------------------- the device


class SimDeviceMachine(RuleBasedStateMachine):
    """The real SimDevice (files, fsync, atomic env) under requests and power cuts."""

    def __init__(self) -> None:
        super().__init__()
        self.workdir = Path(tempfile.mkdtemp(prefix="simprop-"))
        self.device = SimDevice.provision(
            self.workdir, slot_size=SLOT_SIZE, max_attempts=MAX_ATTEMPTS
        )
        self.trial_boots = 0
        self.committed_digest = self._digest(Slot.A)

    def teardown(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _digest(self, slot: Slot) -> str:
        return hashlib.sha256(self.device.slot_path(slot).read_bytes()).hexdigest()

    def _power_on(self) -> None:
        before = self.device.read_env()
        self.device = SimDevice(self.workdir)  # a fresh process after the cut or reboot
        active = self.device.boot()
        after = self.device.status()
        if active == after.committed:
            self.trial_boots = 0
        else:
            assert active == before.trial
            fresh_trial = before.attempts_left == MAX_ATTEMPTS  # armed since the last boot
            self.trial_boots = 1 if fresh_trial else self.trial_boots + 1
        assert self.trial_boots <= MAX_ATTEMPTS
        if before.trial is None:  # a brown-out: nothing armed, nothing moves
            assert (active, after.committed) == (before.committed, before.committed)

    @rule(slot=slots, payload=st.binary(min_size=1, max_size=3000))
    def write_slot(self, slot: Slot, payload: bytes) -> None:
        try:
            self.device.mark_unbootable(slot)
            with self.device.open_slot(slot) as sink:
                sink.write(payload)
                sink.flush()
        except BootControlError:
            return

    @rule(slot=slots)
    def set_trial(self, slot: Slot) -> None:
        try:
            self.device.set_trial(slot)
        except BootControlError:
            assert slot == self.device.status().committed

    @rule()
    def mark_good(self) -> None:
        status = self.device.status()
        try:
            self.device.mark_good()
        except BootControlError:
            return
        if status.trial:
            self.committed_digest = self._digest(status.active)

    @rule()
    def reboot(self) -> None:
        self._power_on()

    @rule(slot=slots, cut_at=st.integers(min_value=0, max_value=12), payload=st.binary(max_size=64))
    def power_cut_during_install(self, slot: Slot, cut_at: int, payload: bytes) -> None:
        dying = SimDevice(self.workdir, faults=FaultPlan(cut_at=cut_at))
        try:
            dying.mark_unbootable(slot)
            with dying.open_slot(slot) as sink:
                sink.write(payload + b"x")
            dying.set_trial(slot)
        except (PowerCut, BootControlError):
            pass
        self._power_on()

    @invariant()
    def committed_slot_is_bootable_and_untouched(self) -> None:
        env = self.device.read_env()
        assert env.committed not in env.unbootable
        assert self._digest(env.committed) == self.committed_digest


TestSimDeviceMachine = SimDeviceMachine.TestCase
TestSimDeviceMachine.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
