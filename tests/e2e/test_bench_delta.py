"""bench/delta.py runs end to end on small images and prints the rows issue 13 asks for.

Behaviour only: the numbers themselves are measured in bench/, never asserted here."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"tool", "patch_bytes", "generate_s", "apply_s", "apply_peak_rss_mb", "ok", "missing"}


def test_bench_delta_only_ours_reports_one_checked_row(tmp_path: Path) -> None:
    rng = random.Random(3)
    blocks = [rng.randbytes(4096) for _ in range(64)]
    (tmp_path / "old.img").write_bytes(b"".join(blocks))
    (tmp_path / "new.img").write_bytes(b"".join([*blocks[10:], rng.randbytes(4096)]))
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "delta.py"),
            "--only-ours",
            str(tmp_path / "old.img"),
            str(tmp_path / "new.img"),
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert [r["tool"] for r in rows] == ["orangefriday"]
    assert set(rows[0]) == KEYS
    assert rows[0]["ok"] is True
    assert 0 < rows[0]["patch_bytes"] < 64 * 4096 // 4
