"""The console scripts as a user runs them: real processes, real ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lab.net import free_port, wait_for_port
from signing.keys import init_keys

BIN = Path(sys.executable).parent


@contextmanager
def running(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ota_server_run_serves_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_keys(repo)
    port = free_port()
    args = [
        str(BIN / "ota"),
        "server",
        "run",
        "--port",
        str(port),
        "--db-url",
        f"sqlite:///{tmp_path / 's.db'}",
        "--repo-dir",
        str(repo / "repository"),
    ]
    with running(args, {"OTA_ADMIN_TOKEN": "a", "OTA_ENROLLMENT_TOKEN": "e"}):
        wait_for_port(port, timeout=30)
        url = f"http://127.0.0.1:{port}/tuf/metadata/1.root.json"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read() == (repo / "root.json").read_bytes()


def test_ota_broker_run_accepts_mqtt_clients(tmp_path: Path) -> None:
    port = free_port()
    args = [str(BIN / "ota"), "broker", "run", "--port", str(port)]
    args += ["--db-url", f"sqlite:///{tmp_path / 's.db'}"]
    with running(args, {"OTA_BROKER_PASSWORD": "pw"}):  # logins only: the server's user here
        wait_for_port(port, timeout=30)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe")
        client.username_pw_set("ota-server", "pw")
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            deadline = time.monotonic() + 10
            while not client.is_connected():
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            client.disconnect()
            client.loop_stop()


def test_ota_agent_tuf_client_is_the_conformance_client(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_keys(repo)
    meta = tmp_path / "meta"
    meta.mkdir()
    agent = str(BIN / "ota-agent")
    ok = subprocess.run(
        [agent, "tuf-client", "--metadata-dir", str(meta), "init", str(repo / "root.json")],
        capture_output=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert (meta / "root.json").read_bytes() == (repo / "root.json").read_bytes()
    bad = subprocess.run(
        [
            agent,
            "tuf-client",
            "--metadata-dir",
            str(meta),
            "--metadata-url",
            "http://127.0.0.1:9/",
            "refresh",
        ],
        capture_output=True,
        check=False,
    )
    assert bad.returncode == 1


def test_ota_agent_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('device_id = "d"\n')
    proc = subprocess.run(
        [str(BIN / "ota-agent"), "status", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("ota-agent: error: config is missing: model")
    assert "Traceback" not in proc.stderr


def test_the_demo_is_ota_lab_demo_and_no_longer_an_ota_command() -> None:
    lab = subprocess.run(
        [str(BIN / "ota-lab"), "demo", "--help"], capture_output=True, text=True, check=False
    )
    assert lab.returncode == 0, lab.stderr
    assert all(option in lab.stdout for option in ("--json", "--devices", "--testers", "--workdir"))
    ota = subprocess.run([str(BIN / "ota"), "demo"], capture_output=True, text=True, check=False)
    assert ota.returncode != 0
    assert "No such command 'demo'" in ota.stderr


def _one_line_failure(args: list[str], code: int) -> str:
    done = subprocess.run(
        [str(BIN / "ota"), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == code, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("ota: error: ")
    return line


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for command in (["broker", "run"], ["server", "run"]):
            line = _one_line_failure([*command, "--port", port], 3)
            assert f"127.0.0.1:{port} is in use; choose another with --port" in line


def test_a_targets_store_that_cannot_work_is_one_line() -> None:
    port = str(free_port())
    line = _one_line_failure(["server", "run", "--port", port, "--targets-store", "ftp://x"], 1)
    assert "the targets' store must be s3://bucket[/prefix], not 'ftp://x'" in line
    url = "gopher://cdn"
    line = _one_line_failure(["server", "run", "--port", port, "--targets-public-url", url], 1)
    assert "the targets' public URL must be http(s)://" in line


def test_serving_a_repository_without_online_keys_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_keys(repo)
    (repo / "keys" / "timestamp.pem").unlink()
    line = _one_line_failure(["server", "run", "--repo-dir", str(repo / "repository")], 1)
    assert "no online keys at" in line
    assert "--online-keys DIR, or --no-renew" in line


def test_ota_health_says_how_long_the_repository_lasts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_keys(repo)
    port = free_port()
    args = [str(BIN / "ota"), "server", "run", "--port", str(port)]
    args += ["--db-url", f"sqlite:///{tmp_path / 's.db'}", "--repo-dir", str(repo / "repository")]
    url = f"http://127.0.0.1:{port}"
    with running(args):
        done = subprocess.run(
            [str(BIN / "ota"), "health", "--server", url, "--wait", "30"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert "valid for 2" in done.stdout  # 23.9 or 24.0 h
    assert "(re-signed every 1 h)" in done.stdout


def test_ota_simulate_runs_the_labs_rehearsal_with_the_same_arguments() -> None:
    argv = ["simulate", "--plan", "--devices", "2000", "--trains", "4", "--seed", "7"]
    via_ota = subprocess.run([BIN / "ota", *argv], capture_output=True, text=True, timeout=120)
    via_lab = subprocess.run([BIN / "ota-lab", *argv], capture_output=True, text=True, timeout=120)
    assert via_ota.returncode == 0, via_ota.stderr
    assert "weekly trains" in via_ota.stdout
    assert via_ota.stdout == via_lab.stdout  # the same command, not a second simulator
