"""The lab's one way to start each real part on a free loopback port: the server (uvicorn in
a thread), the embedded broker (amqtt in a thread) and a mosquitto process."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from lab.net import LOOPBACK, free_port, wait_for_port
from server.app import create_app
from server.broker import EmbeddedBroker
from server.settings import Settings

START_TIMEOUT_S = 20.0
MOSQUITTO_USUAL_PLACE = Path("/usr/sbin/mosquitto")


@contextmanager
def live_server(settings: Settings, port: int | None = None) -> Iterator[str]:
    """uvicorn serving `create_app(settings)`; yields its base URL, stops it on exit."""
    port = port or free_port()
    config = uvicorn.Config(
        create_app(settings),
        host=LOOPBACK,
        port=port,
        log_level="warning",
        lifespan="on",
        access_log=False,  # server.access_log logs requests, without query strings
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server stopped during startup (see its log)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not start within {START_TIMEOUT_S}s")
        time.sleep(0.02)


@contextmanager
def embedded_broker(port: int | None = None) -> Iterator[str]:
    """The embedded amqtt broker on a free port (or `port`); yields its mqtt:// URL."""
    with EmbeddedBroker(LOOPBACK, port or free_port()) as broker:
        yield broker.url


def mosquitto_binary() -> str | None:
    """Where the mosquitto binary is, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found is None and MOSQUITTO_USUAL_PLACE.exists():
        return str(MOSQUITTO_USUAL_PLACE)
    return found


@contextmanager
def mosquitto(binary: str, conf: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """mosquitto -c `conf`, its stderr in `log`, running once `port` accepts connections;
    a mosquitto that does not start is a TimeoutError carrying its log."""
    with log.open("wb") as log_file:
        proc = subprocess.Popen([binary, "-c", str(conf)], stderr=log_file)
    try:
        _wait_listening(proc, port, log)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    try:
        wait_for_port(port)
    except TimeoutError:
        proc.kill()
        raise TimeoutError(f"mosquitto did not start: {log.read_text()}") from None


@contextmanager
def anonymous_mosquitto(binary: str, workdir: Path) -> Iterator[str]:
    """A private mosquitto on a free port (anonymous, loopback only); yields its mqtt:// URL."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} {LOOPBACK}\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\nlog_type error\n"
    )
    with mosquitto(binary, conf, port, workdir / "mosquitto.log"):
        yield f"mqtt://{LOOPBACK}:{port}"


def persistent_mosquitto_conf(workdir: Path, port: int) -> Path:
    """An anonymous loopback mosquitto on `port` that keeps its sessions and queued QoS 1
    messages in `workdir` across restarts (written on a clean stop, and every second)."""
    conf = workdir / "mosquitto-persistent.conf"
    conf.write_text(
        f"listener {port} {LOOPBACK}\nallow_anonymous true\n"
        f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
        "log_dest stderr\nlog_type error\n"
    )
    return conf
