"""The agent's install stays small: importing everything a device runs pulls in no server,
cloud or CLI framework libraries (`pip install .[agent]` does not carry them)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = {
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "boto3",
    "botocore",
    "typer",
    "rich",
    "amqtt",
    "psycopg",
    "httpx",  # server.api_client: the device speaks through agent.server_api (urllib3)
    "pydantic",
    "pydantic_core",
}


def test_agent_runs_without_any_server_side_library() -> None:
    # make every server-side library unimportable, as on a device with only .[agent]
    # (securesystemslib imports boto3 for its AWS signer only when it happens to exist)
    code = (
        "import sys, json, importlib.abc\n"
        f"BLOCKED = {sorted(SERVER_SIDE)!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not installed on a device')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import agent.cli, agent.daemon, agent.conformance, agent.runner\n"
        "import hardware.registry, hardware.sim\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(json.loads(out.stdout))
    assert loaded & SERVER_SIDE == set()
    assert {"tuf", "paho", "urllib3"} <= loaded


def test_agent_extra_declares_no_server_side_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {
        req.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
        for req in project["optional-dependencies"]["agent"]
    }
    assert names & SERVER_SIDE == set()
    assert project["scripts"]["ota-agent"] == "agent.cli:main"
