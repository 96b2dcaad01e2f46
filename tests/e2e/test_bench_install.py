"""bench/install.py runs end to end on a small image and reports what issue 3 asks for.

Behaviour only: the numbers themselves are measured in bench/, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
KEYS = {
    "image_bytes",
    "server",
    "agent_wall_s",
    "agent_total_s",
    "agent_peak_rss_mb",
    "bytes_written",
    "sha256_wall_s",
    "write_wall_s",
    "plain_wall_s",
    "targets",
}


def test_bench_install_reports_every_number(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "install.py"),
            "--size-mb",
            "8",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result.keys() >= KEYS
    assert result["image_bytes"] == 8 * MIB
    # the slot once, plus the journal, outbox and TUF metadata: no temporary copy
    assert 8 * MIB <= result["bytes_written"] < 9 * MIB
    assert result["targets"]["bytes_written_equal_image"]["met"] is True
    assert set(result["targets"]) == {
        "wall_within_1.15x_max_sha256_write",
        "peak_rss_under_50mb",
        "bytes_written_equal_image",
        "faster_than_plain",
    }
    assert result["agent_peak_rss_mb"] > 0
