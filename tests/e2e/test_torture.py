"""A smaller torture run (bench/torture.py): excluded from `make test`, run with -m slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TORTURE = Path(__file__).resolve().parents[2] / "bench" / "torture.py"


@pytest.mark.slow
def test_torture_run_leaves_nothing_bricked_torn_lost_or_doubled() -> None:
    args = ["--seed", "7", "--updates", "24", "--devices", "3"]
    run = subprocess.run(
        [sys.executable, str(TORTURE), *args], capture_output=True, text=True, timeout=240
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
    assert counts["updates"] == 24
    assert counts["updates_committed"] + counts["rollbacks"] == 24
    assert counts["rollbacks"] > 0
    assert counts["power_cuts"] >= 24
    assert counts["reboots"] >= 2 * 24
