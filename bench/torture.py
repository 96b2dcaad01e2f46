"""Torture run: many updates, many reboots and random power cuts on simulated devices.

    .venv/bin/python bench/torture.py --seed 1 --updates 100 --devices 4

A real server (live_server, SQLite) and a signed repository; the devices' files live on the
lab's page-cache disk (lab.pagecache.CachedDisk), so a cut loses whatever was not synced.
Each round publishes the next release and every device installs it while the power goes at
random durable steps (of the install, of the boots and resumes after a cut, and of brown-out
reboots between updates).
Now and then a device's health check is switched to fail for a round, so it must roll back.
After each round every device is settled and audited (agent.testing): a bootable good slot,
no torn file, every durable report on the server once, the final state reported.
Prints one JSON object; every count of damage must be 0.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.runner import Agent
from agent.testing import (
    PoweredDevice,
    ReportAudit,
    boot_problems,
    torn_files,
)
from hardware.sim import FaultPlan, SimDevice
from lab.powerlab import Lab, lab  # the lab the power-cut tests use too
from wire import FailureReason, UpdateState

INSTALL_STEPS = 140  # an install has 103 to 128 durable steps: a cut drawn past them misses
BOOT_STEPS = 13  # a boot and resume has 13 (bootenv, outbox counter and report, an ack)
MAX_CUTS_IN_A_ROW = 200  # a cut rate near 1 still lets a boot through, eventually


@dataclass
class Counts:
    devices_without_bootable_slot: int = 0
    torn_files: int = 0
    lost_final_reports: int = 0
    lost_reports: int = 0
    duplicate_reports: int = 0
    updates: int = 0
    updates_committed: int = 0
    rollbacks: int = 0
    rollbacks_for_health: int = 0  # the rest: trials the power cuts never let finish
    other_outcomes: int = 0
    power_cuts: int = 0
    reboots: int = 0
    wall_s: float = 0.0


def maybe_cut(rng: random.Random, rate: float, steps: int) -> FaultPlan:
    return FaultPlan(cut_at=rng.randrange(steps)) if rng.random() < rate else FaultPlan()


def recover(device: PoweredDevice, rng: random.Random, rate: float) -> None:
    """Boot after a cut; the power may go again during the boot or the resume."""
    for _ in range(MAX_CUTS_IN_A_ROW):
        if device.boot_and_resume(maybe_cut(rng, rate, BOOT_STEPS)) is None:
            return
    raise AssertionError("the power never stayed on")


def one_update(device: PoweredDevice, rng: random.Random, rate: float) -> None:
    """Install what the server offers, cut wherever the dice say, until it went through."""
    for _ in range(MAX_CUTS_IN_A_ROW):
        if device.run(Agent.poll_once, maybe_cut(rng, rate, INSTALL_STEPS)) is None:
            return
        recover(device, rng, rate)
    raise AssertionError("the install never got through")


def brown_outs(device: PoweredDevice, rng: random.Random, rate: float) -> None:
    for _ in range(rng.randint(1, 2)):
        if device.boot_and_resume(maybe_cut(rng, rate, BOOT_STEPS)) is not None:
            recover(device, rng, rate)


def audit(the_lab: Lab, device: PoweredDevice, counts: Counts) -> UpdateState:
    agent = device.settle()
    final = agent.record.state
    counts.rollbacks_for_health += agent.record.reason is FailureReason.HEALTH_CHECK
    counts.devices_without_bootable_slot += bool(boot_problems(device, the_lab.good))
    counts.torn_files += len(torn_files(device))
    reports = ReportAudit.of(device.ledger, the_lab.reports(agent.parts.device_id), final)
    row = the_lab.device_row(agent.parts.device_id)
    counts.lost_final_reports += (not reports.final_reported) or row.state != final.value
    counts.lost_reports += len(reports.lost)
    counts.duplicate_reports += len(reports.duplicated) + len(reports.reused)
    return final


def round_for(
    the_lab: Lab, device: PoweredDevice, rng: random.Random, rate: float, counts: Counts
) -> None:
    SimDevice(device.root).health_failing = rng.random() < 0.2
    one_update(device, rng, rate)
    brown_outs(device, rng, rate)
    final = audit(the_lab, device, counts)
    counts.updates += 1
    if final is UpdateState.COMMITTED:
        counts.updates_committed += 1
    elif final is UpdateState.ROLLED_BACK:
        counts.rollbacks += 1
    else:
        counts.other_outcomes += 1


def torture(seed: int, updates: int, devices: int, rate: float, tmp: Path) -> Counts:
    started = time.monotonic()
    with lab(tmp) as the_lab:
        fleet = [the_lab.new_device(f"torture-{seed}-{i}") for i in range(devices)]
        per_device = [Counts() for _ in fleet]
        with ThreadPoolExecutor(max_workers=devices) as pool:
            for rnd in range(math.ceil(updates / devices)):
                the_lab.publish(f"1.{rnd + 1}")
                runs = [
                    pool.submit(round_for, the_lab, d, random.Random(f"{seed}/{i}/{rnd}"), rate, c)
                    for i, (d, c) in enumerate(zip(fleet, per_device, strict=True))
                ]
                for run in runs:
                    run.result()
        total = Counts()
        for device, counts in zip(fleet, per_device, strict=True):
            for key, value in asdict(counts).items():
                setattr(total, key, getattr(total, key) + value)
            total.power_cuts += device.power_cuts
            total.reboots += device.sim.boots
    total.wall_s = round(time.monotonic() - started, 1)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--updates", type=int, default=100, help="device updates in all")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--cut-rate", type=float, default=0.7, help="share of runs cut")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="torture-") as tmp:
        counts = torture(args.seed, args.updates, args.devices, args.cut_rate, Path(tmp))
    print(json.dumps({"seed": args.seed, "devices": args.devices, **asdict(counts)}))
    damage = (
        counts.devices_without_bootable_slot,
        counts.torn_files,
        counts.lost_final_reports,
        counts.lost_reports,
        counts.duplicate_reports,
    )
    return 1 if any(damage) else 0


if __name__ == "__main__":
    sys.exit(main())
