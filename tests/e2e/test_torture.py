"""A shorter torture run (bench/torture.py) on the page-cache disk: 120 updates with random
power cuts, about a minute and a half. Excluded from `make test`; `make slow` (which CI runs
too) runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TORTURE = Path(__file__).resolve().parents[2] / "bench" / "torture.py"
UPDATES = 120


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torture_run_leaves_nothing_bricked_torn_lost_or_doubled() -> None:
    args = ["--seed", "7", "--updates", str(UPDATES), "--devices", "4"]
    run = subprocess.run(
        [sys.executable, str(TORTURE), *args], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    counts = json.loads(run.stdout)
    damage = [
        "devices_without_bootable_slot",
        "torn_files",
        "lost_final_reports",
        "lost_reports",
        "duplicate_reports",
    ]
    assert {key: counts[key] for key in damage} == dict.fromkeys(damage, 0)
    assert counts["updates"] == UPDATES
    assert counts["updates_committed"] + counts["rollbacks"] == UPDATES
    assert counts["rollbacks"] > 0
    assert counts["power_cuts"] >= UPDATES
    assert counts["reboots"] >= 2 * UPDATES
