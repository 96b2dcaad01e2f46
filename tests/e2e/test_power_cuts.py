"""Never bricked, never lost: the power goes at every durable step of an update, in turn.

Each cut point is one fresh device on a shared real server (live_server, SQLite). A recording
run of the action lists its durable steps (the simulated device's bootenv and slot steps, the
agent's journal and outbox writes and acknowledgements); then, for each index N, a new device
runs the same action with the power cut at step N, boots again (a new SimDevice and a new
Agent on the same directories), resumes and polls until it rests. A failing cut point is named
by its index and step, and `FaultPlan(cut_at=N)` replays it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import durable
from agent.runner import Agent
from agent.testing import PoweredDevice, boot_problems
from hardware.bootcontrol import BootControlError, Slot
from hardware.sim import FaultPlan, SimDevice
from hardware.sim_env import env_to_json
from lab.powerlab import Lab, lab, outcome
from wire import FailureReason, UpdateState

RELEASE = "1.0"
WORKERS = 4


@pytest.fixture(scope="module")
def the_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with lab(tmp_path_factory.mktemp("powerlab")) as made:
        made.publish(RELEASE)
        yield made


def recorded_steps(the_lab: Lab, name: str, *, health_failing: bool) -> list[str]:
    device = the_lab.new_device(f"{name}-recording", health_failing=health_failing)
    plan = FaultPlan.recording()
    assert device.run(Agent.poll_once, plan) is None
    families = {step.split(".")[0] for step in plan.steps}
    assert families == {"bootenv", "slot", "journal", "outbox"}, families  # all wired in
    return plan.steps


def cut_and_recover(the_lab: Lab, device: PoweredDevice, n: int, step: str) -> list[str]:
    """Cut at step `n` of an install, boot again, settle; what went wrong (empty: nothing)."""
    cut = device.run(Agent.poll_once, FaultPlan(cut_at=n))
    if cut is None or (cut.index, cut.step) != (n, step):
        return [f"expected a cut at {n} ({step}), got {cut}"]
    if device.boot_and_resume() is not None:
        return ["a clean boot was cut"]
    found = boot_problems(device, the_lab.good)  # what the bootloader picked right after
    device.rest()
    return found + the_lab.problems(device)


def one_cut_point(
    the_lab: Lab, name: str, n: int, step: str, health_failing: bool, expect: UpdateState
) -> str | None:
    device = the_lab.new_device(f"{name}-{n}", health_failing=health_failing)
    problems = cut_and_recover(the_lab, device, n, step)
    if outcome(device) is not expect:
        problems.append(f"ended {outcome(device)}, expected {expect.value}")
    elif device.agent is not None:
        problems += outcome_problems(the_lab, device.agent, expect)
    return f"cut point {n} ({step}): " + "; ".join(problems) if problems else None


def outcome_problems(the_lab: Lab, agent: Agent, expect: UpdateState) -> list[str]:
    """Committed: the release runs from slot b. Rolled back: slot a runs, and the server was
    told the health check was why."""
    new = expect is UpdateState.COMMITTED
    want = (
        (RELEASE, Slot.B, FailureReason.NONE) if new else ("", Slot.A, FailureReason.HEALTH_CHECK)
    )
    got = (agent.current_version, agent.parts.boot.status().committed, agent.record.reason)
    problems = [f"ended on {got}, expected {want}"] if got != want else []
    row = the_lab.device_row(agent.parts.device_id)
    if (row.current_version, row.reason) != (want[0], want[2].value):
        problems.append(f"server row says {row.current_version!r}, {row.reason!r}")
    return problems


def sweep(the_lab: Lab, name: str, *, health_failing: bool, expect: UpdateState) -> int:
    """Every cut point of one install, four devices at a time (they wait on fsync and HTTP)."""
    steps = recorded_steps(the_lab, name, health_failing=health_failing)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        runs = [
            pool.submit(one_cut_point, the_lab, name, n, step, health_failing, expect)
            for n, step in enumerate(steps)
        ]
        failures = [f for f in (run.result() for run in runs) if f is not None]
    assert not failures, f"{len(failures)} of {len(steps)} cut points failed:\n" + "\n".join(
        failures
    )
    return len(steps)


def test_power_cut_at_every_step_of_a_good_install_ends_committed(the_lab: Lab) -> None:
    covered = sweep(the_lab, "good", health_failing=False, expect=UpdateState.COMMITTED)
    assert covered > 40, covered
    print(f"{covered} cut points")


def test_power_cut_at_every_step_of_a_bad_install_ends_rolled_back(the_lab: Lab) -> None:
    covered = sweep(the_lab, "bad", health_failing=True, expect=UpdateState.ROLLED_BACK)
    assert covered > 40, covered
    print(f"{covered} cut points")


# ---------------------------------------------------------------------- brown-outs and trials


def installed(the_lab: Lab, name: str) -> PoweredDevice:
    """A device that installed and committed the release (slot b), at rest."""
    device = the_lab.new_device(name)
    device.rest()
    assert outcome(device) is UpdateState.COMMITTED
    return device


def test_five_brown_outs_during_normal_boots_leave_the_device_on_its_slot(the_lab: Lab) -> None:
    device = installed(the_lab, "brownout")
    running, booted_before = device.sim.status().active, len(device.booted)
    recording = FaultPlan.recording()
    assert device.boot_and_resume(recording) is None
    rng = random.Random(5)
    for _ in range(5):
        n = rng.randrange(len(recording.steps))
        assert device.boot_and_resume(FaultPlan(cut_at=n)) is not None, recording.steps[n]
    device.settle()
    assert set(device.booted[booted_before:]) == {running}, device.booted
    assert outcome(device) is UpdateState.COMMITTED
    assert the_lab.problems(device) == []


class CutEveryTrialBoot(FaultPlan):
    """The power goes at the agent's first durable step whenever the device runs a trial:
    the trial never reaches a verdict, so only the bootloader's attempt counter can end it."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def step(self, name: str) -> None:
        trial_runs = self.cut is None and not name.startswith("bootenv.")
        if trial_runs and SimDevice(self.root).status().trial:
            self.cut_at = len(self.steps)
        super().step(name)


def test_a_trial_that_never_reaches_a_verdict_falls_back_within_three_boots(
    the_lab: Lab,
) -> None:
    device = the_lab.new_device("never-verdict")
    assert device.run(Agent.poll_once, CutEveryTrialBoot(device.root)) is not None
    while device.boot_and_resume(CutEveryTrialBoot(device.root)) is not None:
        assert len(device.booted) < 10, device.booted
    assert device.booted[1:] == [Slot.B, Slot.B, Slot.A]  # two more tries, then the fallback
    device.rest()
    assert outcome(device) is UpdateState.ROLLED_BACK
    assert device.agent is not None
    assert device.agent.record.reason is FailureReason.BOOT_FAILED
    assert the_lab.problems(device) == []


def test_a_bad_image_rolls_back_within_three_boot_attempts(the_lab: Lab) -> None:
    device = the_lab.new_device("bad-image", health_failing=True)
    boots_before = device.sim.boots
    device.rest()
    assert outcome(device) is UpdateState.ROLLED_BACK
    assert device.sim.boots - boots_before <= 3
    status = device.sim.status()
    assert (status.active, status.committed, status.trial) == (Slot.A, Slot.A, False)
    assert the_lab.problems(device) == []


def test_with_both_slots_out_of_attempts_the_last_committed_slot_boots(the_lab: Lab) -> None:
    device = installed(the_lab, "exhausted")
    env = device.sim.read_env()
    exhausted = dataclasses.replace(
        env, trial=Slot.A, attempts_left=0, unbootable=frozenset({Slot.A, Slot.B})
    )
    (device.root / "bootenv.json").write_bytes(env_to_json(exhausted))
    device.settle()
    assert device.booted[-1] is Slot.B
    assert outcome(device) is UpdateState.COMMITTED
    assert the_lab.problems(device) == []


# ---------------------------------------------------------------------- a torn journal


def garbage_journal_at(the_lab: Lab, n: int, step: str) -> str | None:
    device = the_lab.new_device(f"garbage-{n}")
    cut = device.run(Agent.poll_once, FaultPlan(cut_at=n))
    assert cut is not None
    (device.data_dir / "journal.json").write_bytes(b'{"format": 1, "state": "trial", \x00\xff')
    device.settle()
    problems = the_lab.problems(device, corrupt_expected=True)
    if outcome(device) is not UpdateState.COMMITTED:
        problems.append(f"ended {outcome(device)}")
    if not list(device.data_dir.glob("journal.json.corrupt-*")):
        problems.append("the garbage was not kept aside")
    return f"cut point {n} ({step}): " + "; ".join(problems) if problems else None


def test_a_garbage_journal_recovers_from_the_bootloaders_view_and_converges(
    the_lab: Lab,
) -> None:
    steps = recorded_steps(the_lab, "garbage", health_failing=False)
    points = [(n, step) for n, step in enumerate(steps) if n % 6 == 0]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        found = list(pool.map(lambda p: garbage_journal_at(the_lab, *p), points))
    failures = [f for f in found if f is not None]
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------- every fsync matters

DURABLE_SYNCS = {"file": "fsync_file", "directory": "fsync_dir"}


def damage_at(the_lab: Lab, name: str, n: int, step: str) -> str | None:
    """`one_cut_point` of a good install, where a device that no longer boots is damage too."""
    try:
        return one_cut_point(the_lab, name, n, step, False, UpdateState.COMMITTED)
    except (BootControlError, AssertionError) as exc:
        return f"cut point {n} ({step}): the device is stuck: {exc!r}"


@pytest.mark.parametrize("sync", sorted(DURABLE_SYNCS))
def test_without_each_fsync_of_the_durable_writes_a_power_cut_does_damage(
    the_lab: Lab, sync: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page cache model bites: with the file's or the directory's fsync gone from
    `durable`, a cut in the install leaves a torn file, a journal gone back to an older
    state, or reports lost or doubled."""
    name = f"no-{sync}-sync"
    steps = recorded_steps(the_lab, name, health_failing=False)
    monkeypatch.setattr(durable, DURABLE_SYNCS[sync], lambda _where: None)
    points = [len(steps) * share // 4 for share in (1, 2, 3)]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        found = list(pool.map(lambda n: damage_at(the_lab, name, n, steps[n]), points))
    assert None not in found, found
    print("\n".join(str(f) for f in found))
