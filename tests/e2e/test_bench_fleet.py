"""bench/fleet.py runs end to end at a small N (the real server in its own process, a real
mosquitto, `lab.fleetsim`'s devices) and every report the devices made is stored once.

Behaviour only: the timings are measured in bench/ (docs/benchmarks.md), never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "devices",
    "db",
    "broker",
    "notified_99_s",
    "notified_100_s",
    "ingested_all_s",
    "reports_per_s",
    "p50_ms",
    "p99_ms",
    "server_cpu_s",
    "server_peak_rss_mb",
    "reports_sent",
    "reports_stored",
}

pytestmark = pytest.mark.mosquitto


def test_a_small_fleet_installs_the_release_and_every_report_is_stored_once(
    tmp_path: Path, mosquitto_url: str
) -> None:
    # mosquitto_url: skipped (or failed, in CI) without mosquitto; the bench starts its own
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fleet.py"),
            *("--devices", "50", "--db", "sqlite", "--broker", "mosquitto"),
            *("--processes", "2", "--timeout", "120", "--workdir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result.keys() >= KEYS
    assert (result["devices"], result["db"], result["broker"]) == (50, "sqlite", "mosquitto")
    assert result["reports_sent"] == result["reports_stored"] > 0
    # every online device heard the notice and finished: committed or rolled back
    assert result["notified_100_s"] is not None
    assert result["committed"] + result["rolled_back"] == result["online"] > 0
