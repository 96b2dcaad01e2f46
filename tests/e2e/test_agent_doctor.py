"""`ota-agent doctor` against real parts: a live server from the lab, a real mosquitto (one
anonymous, one that refuses unknown logins). The ok path is a real `ota-agent` process; each
failure path breaks one thing and the doctor names that check, says what to fix, exits 1."""

from __future__ import annotations

import getpass
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.identity import KEY_FILE, DeviceKey
from agent.trusted_clock import TRUSTED_TIME_FILE
from lab.agentproc import toml_config
from lab.fleet import KIB, Backend, Board, running_backend
from lab.net import free_port
from lab.processes import LOOPBACK, mosquitto, mosquitto_binary

BOARD = Board(model="board", slot_size=256 * KIB, image_size=128 * KIB, chunk_size=64 * KIB)
_numbers = itertools.count()
OTA_AGENT = str(Path(sys.executable).parent / "ota-agent")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with running_backend(tmp_path_factory.mktemp("lab"), BOARD) as running:
        yield running


@pytest.fixture(scope="module")
def closed_mosquitto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A mosquitto that admits no one (no anonymous login, an empty password file)."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto binary not found")
    workdir = tmp_path_factory.mktemp("closed-mosquitto")
    (workdir / "passwd").write_text("")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} {LOOPBACK}\nallow_anonymous false\npassword_file {workdir}/passwd\n"
        "persistence false\nlog_dest stderr\nlog_type error\n"
        f"user {getpass.getuser()}\n"  # as root, it would drop to a user that cannot read passwd
    )
    with mosquitto(binary, conf, port, workdir / "mosquitto.log"):
        yield f"mqtt://{LOOPBACK}:{port}"


def device_config(backend: Backend, folder: Path, **fields: Any) -> Path:
    """An enrolled device on a provisioned simulated board; `fields` override the config."""
    device = f"doc-{next(_numbers)}"  # each test its own device: an id is enrolled once
    sim = backend.provision(device)
    defaults: dict[str, Any] = {
        "data_dir": folder / "data",
        "slot_backend": "sim",
        "slot_options": {"root": str(sim.root)},
    }
    config = backend.agent_config(device, **{**defaults, **fields})
    path = folder / "agent.toml"
    path.write_text(toml_config(config))
    return path


def doctor(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    """Run the doctor in-process; its exit code and what the failed checks said, by name."""
    code = main(["doctor", "--config", str(config), "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is (code == 0)
    failed: dict[str, str] = {}
    for check in answer["checks"]:
        if not check["ok"]:
            failed[check["name"]] = " | ".join(
                filter(None, [failed.get(check["name"]), check["detail"]])
            )
    return code, failed


def test_a_device_set_up_right_passes_every_check_in_a_real_process(
    backend: Backend, tmp_path: Path, mosquitto_url: str
) -> None:
    config = device_config(backend, tmp_path, broker_url=mosquitto_url)
    done = subprocess.run(
        [OTA_AGENT, "doctor", "--config", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    names = [line.split()[1] for line in lines]
    assert names[:4] == ["config", "device", "trusted", "data"]
    assert {"server", "sign-in", "broker", "clock", "boot"} <= set(names)
    assert all(line.startswith("ok ") for line in lines), done.stdout
    assert f"{mosquitto_url} accepts doc-" in done.stdout


def test_a_config_that_does_not_load_is_the_one_failed_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('device_id = "x"\nchanel = "beta"\n')
    assert main(["doctor", "--config", str(config)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("FAIL  config")
    assert "docs/agent.md#configuration" in line


def test_an_unenrolled_device_is_told_to_enroll(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = device_config(backend, tmp_path, data_dir=tmp_path / "fresh")
    (tmp_path / "fresh" / KEY_FILE).unlink()
    code, failed = doctor(config, capsys)
    assert code == 1
    assert list(failed) == ["device key"]  # no sign-in is tried without a key
    assert f"ota-agent enroll --config {config}" in failed["device key"]


def test_a_key_the_server_does_not_know_fails_the_sign_in(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = device_config(backend, tmp_path)
    DeviceKey.generate().save(tmp_path / "data" / KEY_FILE)
    code, failed = doctor(config, capsys)
    assert (code, list(failed)) == (1, ["sign-in"])
    assert "enroll again" in failed["sign-in"]


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "cannot read"), (b"{not json", "not a TUF root.json")],
    ids=["missing", "garbage"],
)
def test_a_bad_trusted_root_says_where_the_right_one_comes_from(
    backend: Backend,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    says: str,
) -> None:
    root = tmp_path / "root.json"
    if content is not None:
        root.write_bytes(content)
    code, failed = doctor(device_config(backend, tmp_path, trusted_root=root), capsys)
    assert (code, list(failed)) == (1, ["trusted root"])
    assert says in failed["trusted root"]
    assert "ota keys init" in failed["trusted root"]


def test_a_data_dir_the_agent_cannot_write_fails(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = device_config(backend, tmp_path)
    unwritable = "/proc/ota-doctor-data"  # even root makes no folder there
    config.write_text(config.read_text().replace(str(tmp_path / "data"), unwritable))
    code, failed = doctor(config, capsys)
    assert code == 1
    assert f"cannot write in {unwritable}" in failed["data dir"]


def test_an_unprovisioned_simulated_device_says_how_to_provision(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = device_config(backend, tmp_path, slot_options={"root": str(tmp_path / "nosim")})
    code, failed = doctor(config, capsys)
    assert (code, list(failed)) == (1, ["boot (sim)"])
    assert "ota-agent sim provision" in failed["boot (sim)"]


def test_uboot_without_its_tools_or_its_env_config_fails(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    slots = {"slot_a_device": str(tmp_path / "a"), "slot_b_device": str(tmp_path / "b")}
    for path in slots.values():
        Path(path).write_bytes(b"")
    options = {**slots, "fw_env_config": str(tmp_path / "fw_env.config")}
    config = device_config(backend, tmp_path, slot_backend="uboot", slot_options=options)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    code, failed = doctor(config, capsys)
    assert code == 1
    assert "not on PATH: fw_printenv, fw_setenv, reboot" in failed["boot (uboot)"]
    for tool in ("fw_printenv", "fw_setenv", "reboot"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    code, failed = doctor(config, capsys)
    assert code == 1
    assert f"{tmp_path / 'fw_env.config'} does not exist" in failed["boot (uboot)"]


def test_an_unknown_backend_option_value_is_one_line(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = device_config(backend, tmp_path, slot_backend="uboot", slot_options={})
    code, failed = doctor(config, capsys)
    assert code == 1
    assert "needs option 'slot_a_device'" in failed["boot (uboot)"]


@pytest.mark.parametrize("how", ["down", "not the server"])
def test_a_server_that_is_down_or_wrong_fails(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}" if how == "down" else f"{backend.server_url}/nothing"
    config = device_config(backend, tmp_path)
    config.write_text(config.read_text().replace(backend.server_url, url, 1))
    code, failed = doctor(config, capsys)
    assert (code, list(failed)) == (1, ["server"])
    assert ("unreachable" if how == "down" else "HTTP 404") in failed["server"]


def test_a_broker_that_is_down_or_refuses_the_login_fails(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str], closed_mosquitto_url: str
) -> None:
    down = f"mqtt://127.0.0.1:{free_port()}"
    code, failed = doctor(device_config(backend, tmp_path, broker_url=down), capsys)
    assert (code, list(failed)) == (1, ["broker"])
    assert "unreachable" in failed["broker"]
    config = device_config(backend, tmp_path, broker_url=closed_mosquitto_url)
    code, failed = doctor(config, capsys)
    assert (code, list(failed)) == (1, ["broker"])
    assert "refused the login" in failed["broker"]


def test_a_clock_before_the_trusted_time_fails(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = device_config(backend, tmp_path)
    ahead = datetime.now(UTC) + timedelta(days=2)
    (tmp_path / "data" / TRUSTED_TIME_FILE).write_text(ahead.isoformat())
    code, failed = doctor(config, capsys)
    assert (code, list(failed)) == (1, ["clock"])
    assert "set the clock" in failed["clock"]
    (tmp_path / "data" / TRUSTED_TIME_FILE).write_text((ahead - timedelta(days=4)).isoformat())
    assert doctor(config, capsys) == (0, {})


def test_the_text_output_is_one_line_a_check_with_fail_first_word(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    assert main(["doctor", "--config", str(config)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split()[:2] == ["FAIL", "config"]
    assert "cannot read config" in line
