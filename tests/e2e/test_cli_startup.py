"""Start-up (issue 11): `--help`, and a command refused for its arguments, load none of the
heavy libraries; each command imports what it uses when it runs. Asserted on the modules a
real process has loaded, never on time (docs/benchmarks.md has the times)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = {
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "boto3",
    "botocore",
    "tuf",
    "securesystemslib",
    "uvicorn",
    "httpx",
    "amqtt",
    "rich",
}
LOADED_AFTER = """
import sys
from {module} import main
sys.argv[0] = "{script}"
try:
    main()
except SystemExit:
    pass
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})), file=sys.stderr)
"""
# every group (a group's help builds all its commands' options) and a few commands
OTA_HELP = [
    [],
    ["server"],
    ["broker"],
    ["broker", "mosquitto-config"],
    ["keys"],
    ["keys", "init"],
    ["release"],
    ["release", "publish"],
    ["repo"],
    ["repo", "status"],
    ["devices"],
    ["device"],
    ["releases"],
    ["rollout"],
    ["train"],
    ["token"],
    ["enroll-token"],
    ["fcode"],
    ["feedback"],
    ["health"],
]
COMMANDS = [
    *(("server.cli", "ota", [*args, "--help"]) for args in OTA_HELP),
    ("agent.cli", "ota-agent", ["--help"]),
    ("lab.cli", "ota-lab", ["--help"]),
    ("lab.cli", "ota-lab", ["demo", "--help"]),
]


def _loaded(module: str, script: str, args: list[str]) -> tuple[set[str], str, str]:
    code = LOADED_AFTER.format(module=module, script=script)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=True
    )
    *err, modules = done.stderr.splitlines()
    return set(modules.split()), done.stdout, "\n".join(err)


@pytest.mark.parametrize(
    ("module", "script", "args"),
    COMMANDS,
    ids=[" ".join([script, *args]) for _, script, args in COMMANDS],
)
def test_help_loads_no_heavy_library(module: str, script: str, args: list[str]) -> None:
    loaded, out, err = _loaded(module, script, args)
    assert "usage:" in out.lower(), err
    assert loaded.isdisjoint(HEAVY), sorted(loaded & HEAVY)


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "init"],  # --repo missing
        ["release", "publish", "image.bin"],
        ["devices", "--bogus"],
        ["token", "create"],
    ],
)
def test_a_usage_error_loads_no_heavy_library(args: list[str]) -> None:
    loaded, _, err = _loaded("server.cli", "ota", args)
    assert "Usage:" in err or "Error" in err, err
    assert loaded.isdisjoint(HEAVY), sorted(loaded & HEAVY)


def test_a_command_that_runs_loads_what_it_needs() -> None:
    """The other side: the lazy imports do happen when the command runs (here it fails on a
    repository that does not exist, after python-tuf's modules were loaded)."""
    loaded, _, err = _loaded("server.cli", "ota", ["repo", "status", "--repo", "/nonexistent"])
    assert "ota: error:" in err
    assert "tuf" in loaded
