"""What a device installs (agent/packaging/build.py): the `orangefriday-agent` wheel and the
`ota-agent` .deb. The slow tests build both, install the .deb's wheels into a clean venv the
way its postinst does (no index, no network) and run a whole install with nothing else there;
the fast ones read the unit and the default config as shipped."""

from __future__ import annotations

import configparser
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tools

from agent.config import load_config
from lab.agentproc import agent_process
from lab.fleet import KIB, Backend, Board, running_backend

CHECKOUT = Path(__file__).resolve().parents[2]
PACKAGING = CHECKOUT / "agent" / "packaging"
BOARD = Board(model="board", slot_size=256 * KIB, image_size=128 * KIB, chunk_size=64 * KIB)
SERVER_STACK = ("fastapi", "starlette", "sqlalchemy", "boto3", "uvicorn", "typer", "pydantic")
NOT_ON_A_DEVICE = ("server", "signing", "lab")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools("dpkg-deb")
    out = tmp_path_factory.mktemp("dist")
    build = PACKAGING / "build.py"
    done = subprocess.run(
        [sys.executable, str(build), "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def deb(dist: Path) -> Path:
    (found,) = dist.glob("ota-agent_*.deb")
    return found


@pytest.fixture(scope="module")
def clean_venv(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with nothing but what the .deb's postinst installs: its own wheels, offline."""
    root = tmp_path_factory.mktemp("debroot")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    env = tmp_path_factory.mktemp("clean") / "venv"
    venv.create(env, with_pip=True)
    wheels = root / "opt" / "ota-agent" / "wheels"
    offline = ["--no-index", "--find-links", str(wheels)]  # as the .deb's postinst does
    subprocess.run(
        [env / "bin" / "python", "-m", "pip", "install", "-q", *offline, "orangefriday-agent"],
        check=True,
        cwd=env,
    )
    return env


def run(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False
    )


# --------------------------------------------------------------------------- shipped files


def test_the_default_config_loads_as_shipped() -> None:
    config = load_config(PACKAGING / "agent.toml")
    assert config.data_dir == Path("/var/lib/ota-agent")
    assert config.trusted_root == Path("/etc/ota-agent/root.json")
    assert config.slot_backend == "uboot"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read(PACKAGING / "ota-agent.service")
    return parser


def test_the_unit_restarts_on_failure_logs_to_journald_and_is_hardened() -> None:
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["StandardOutput"] == service["StandardError"] == "journal"
    assert service["ExecStart"].split()[:2] == ["/usr/bin/ota-agent", "run"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert service[key] == value, key
    # what the agent must write stays writable: its state and the boot environment
    writable = service["ReadWritePaths"].split()
    assert "/var/lib/ota-agent" in writable
    assert "-/boot" in writable
    assert "PrivateDevices" not in service  # the slots are block devices
    assert load_config(PACKAGING / "agent.toml").data_dir == Path(
        "/var/lib/" + service["StateDirectory"]
    )


def test_the_unit_is_valid_for_systemd(tmp_path: Path) -> None:
    require_tools("systemd-analyze")
    done = run(["systemd-analyze", "verify", PACKAGING / "ota-agent.service"], tmp_path)
    # on a build machine the ExecStart binary is not installed; everything else must parse
    problems = [
        line
        for line in done.stderr.splitlines()
        if "ota-agent" in line and "/usr/bin/ota-agent" not in line and "Command" not in line
    ]
    assert problems == [], done.stderr


# --------------------------------------------------------------------------- built artifacts


@pytest.mark.slow
def test_the_deb_holds_the_agent_a_unit_and_a_config_and_no_server(deb: Path, dist: Path) -> None:
    info = subprocess.run(["dpkg-deb", "--info", str(deb)], capture_output=True, text=True)
    assert "Package: ota-agent" in info.stdout
    assert "Depends: python3" in info.stdout
    assert "python3-venv" in info.stdout
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert script in info.stdout
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True)
    files = [line.split()[5] for line in listing.stdout.splitlines()]
    assert "./lib/systemd/system/ota-agent.service" in files
    assert "./etc/ota-agent/agent.toml" in files
    assert "./usr/bin/ota-agent" in files
    wheels = [f.rsplit("/", 1)[1].lower() for f in files if f.endswith(".whl")]
    assert any(w.startswith("orangefriday_agent-") for w in wheels)
    assert any(w.startswith("tuf-") for w in wheels)
    assert [w for w in wheels if w.startswith(SERVER_STACK) or w.startswith("orangefriday-")] == []
    (wheel,) = dist.glob("orangefriday_agent-*.whl")
    inside = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True
    ).stdout
    tops = {line.split("/")[0] for line in inside.splitlines()[1:] if "/" in line.split()[0]}
    assert {t for t in tops if not t.endswith(".dist-info")} == {
        "agent",
        "hardware",
        "wire",
        "durable",
        "romdelta",
    }


@pytest.mark.slow
def test_a_clean_venv_holds_no_server_stack_and_no_ota_command(
    clean_venv: Path, tmp_path: Path
) -> None:
    python = clean_venv / "bin" / "python"
    for module in (*SERVER_STACK, *NOT_ON_A_DEVICE):
        done = run([python, "-c", f"import {module}"], tmp_path)
        assert done.returncode != 0, f"{module} is importable on the device"
    assert not (clean_venv / "bin" / "ota").exists()
    assert not (clean_venv / "bin" / "ota-lab").exists()
    assert run([clean_venv / "bin" / "ota-agent", "--help"], tmp_path).returncode == 0


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    with running_backend(tmp_path / "lab", BOARD) as running:
        yield running


@pytest.mark.slow
def test_the_clean_venvs_agent_installs_a_release_end_to_end(
    clean_venv: Path, backend: Backend, tmp_path: Path
) -> None:
    agent = clean_venv / "bin" / "ota-agent"
    device = tmp_path / "device"
    device.mkdir()
    config = device / "agent.toml"
    config.write_text(
        f'device_id = "pkg-1"\nmodel = "{BOARD.model}"\nchannel = "stable"\n'
        f'server_url = "{backend.server_url}"\ntrusted_root = "{backend.repo / "root.json"}"\n'
        'data_dir = "data"\npoll_interval_s = 0.5\n\n[slot]\nbackend = "sim"\nroot = "sim"\n'
    )
    steps: list[list[str | Path]] = [
        ["sim", "provision", "--config", config, "--slot-size-mb", "1"],
        ["enroll", "--config", config, "--token", backend.enrollment_token],
        ["doctor", "--config", config],
    ]
    for step in steps:
        done = run([agent, *step], tmp_path)
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    backend.publish("1.0")
    with agent_process([str(agent), "run", "--config", str(config)], tmp_path / "a.log") as proc:
        proc.wait_for("committed 1.0", timeout=60)
        proc.stop()
        assert "ota-agent 0.1.0 started" in proc.text()
    status = run([agent, "status", "--config", config], tmp_path)
    assert '"state": "committed"' in status.stdout
    assert backend.device_row("pkg-1").current_version == "1.0"
