"""`ota-lab demo` as a user runs it: a subprocess, real ports, exit code and JSON checked; in
an 80-column terminal (COLUMNS=80) every line it writes, and its summary tables, fit."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from lab.demo import summary_tables

COLUMNS = 80


def test_demo_small_fleet_ends_where_it_should(tmp_path: Path) -> None:
    ota_lab = Path(sys.executable).with_name("ota-lab")
    proc = subprocess.run(
        [
            str(ota_lab),
            "demo",
            "--json",
            "--devices",
            "4",
            "--testers",
            "2",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "COLUMNS": str(COLUMNS)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _widest(proc.stderr) <= COLUMNS, proc.stderr  # its log, the agents' warnings
    result = json.loads(proc.stdout)
    assert _widest(_summary(result)) <= COLUMNS
    assert result["ok"] is True
    devices = {d["id"]: d for d in result["devices"]}
    steps = {(s["version"], tuple(s["channels"])): s for s in result["steps"]}

    assert set(devices) == {"tester-00", "tester-01", "phone-02", "phone-03"}
    assert (devices["tester-00"]["version"], devices["tester-00"]["state"]) == (
        "2026.47",
        "rolled_back",
    )
    for name in ("phone-02", "phone-03"):
        assert (devices[name]["version"], devices[name]["state"]) == ("2026.48", "committed")
        assert devices[name]["reports"] >= 11  # idle + 5 per build, none lost
    # tester-01 stays on 2026.48: committed, or rolled back from 2026.49 if its wave tried it
    assert devices["tester-01"]["version"] == "2026.48"
    bad_wave = set(steps[("2026.49", ("preview",))]["devices_affected"])
    expected_state = "rolled_back" if "tester-01" in bad_wave else "committed"
    assert devices["tester-01"]["state"] == expected_state
    bad = steps[("2026.49", ("preview",))]
    assert (bad["rollout"], bad["ok"]) == ("paused", True)
    train = steps[("2026.48", ("preview", "stable"))]
    assert train["train"] == ["announced", "internal", "preview", "stable"]
    rollouts = {(r["version"], r["channel"]): r for r in result["rollouts"]}
    assert rollouts[("2026.48", "stable")]["state"] == "completed"
    assert rollouts[("2026.48", "stable")]["waves_reached"] == [10.0, 50.0, 100.0]
    assert rollouts[("2026.49", "preview")]["state"] == "paused"
    assert rollouts[("2026.49", "preview")]["paused_gate"]
    assert ("2026.49", "stable") not in rollouts  # the bad build never left preview
    groups = result["surfacing"]["groups"]
    kinds = {(g["kind"], g["title"]) for g in groups}
    assert ("agent", "health_check: device") in kinds  # tester-00's rollback, grouped
    assert any(kind == "tester" for kind, _ in kinds)  # tester-01's words
    assert [g["rank"] for g in groups] == list(range(1, len(groups) + 1))
    assert {k for d in result["devices"] for k in d} >= {
        "id",
        "channel",
        "version",
        "slot",
        "state",
        "reports",
    }


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _summary(result: dict[str, Any]) -> str:
    """The tables the demo ends with without --json, drawn from the same result."""
    out = io.StringIO()
    console = Console(file=out, width=COLUMNS)
    for table in summary_tables(result["devices"], result["surfacing"]):
        console.print(table)
    return out.getvalue()
