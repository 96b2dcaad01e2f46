"""The README's five-minute tour, run as written: every fenced block marked `sh tour`,
in order, as one bash script in an empty directory with the venv's bin first on PATH and
the two ports free. It breaks when the README does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.net import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
TOUR_BLOCK = re.compile(r"^```sh tour\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TOUR_TIMEOUT_S = 300
# Stops what the tour left running in the background (broker, server, agent), however it ends.
PROLOGUE = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n"


def tour_blocks(readme: str) -> list[str]:
    return TOUR_BLOCK.findall(readme)


def tour_script(readme: str) -> str:
    return PROLOGUE + "\n".join(tour_blocks(readme))


def test_the_readme_has_a_tour_that_ends_with_a_second_build() -> None:
    blocks = tour_blocks(README.read_text())
    assert len(blocks) >= 4
    assert "ota device wait sim-0001 --version 2026.48" in "".join(blocks)


@pytest.mark.timeout(TOUR_TIMEOUT_S + 30)
def test_the_readme_tour_ends_with_two_committed_builds(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OTA_PORT": str(free_port()),
        "OTA_MQTT_PORT": str(free_port()),
    }
    for name in ("OTA_SERVER_URL", "OTA_TOKEN", "OTA_REPO", "OTA_DB_URL", "OTA_REPO_DIR"):
        env.pop(name, None)
    done = subprocess.run(
        ["bash", "-c", tour_script(README.read_text())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TOUR_TIMEOUT_S,
        check=False,
    )
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert done.returncode == 0, (done.stdout, done.stderr, logs)
    status = json.loads(done.stdout[done.stdout.index('{\n  "device_id"') :])
    journal = status["journal"]
    assert (journal["state"], journal["current_version"]) == ("committed", "2026.48")
    assert sorted(journal["slot_versions"].values()) == ["2026.47", "2026.48"]
    assert "dry run, nothing signed" in done.stdout
