"""Server replicas behind a real HAProxy: `count` stateless `ota server run` processes on one
PostgreSQL database, each on a free port, and HAProxy on another, checking `GET /health` and
sending each request to a replica that answers it. `kill` (SIGKILL) and `start` let the fault
tests take one replica down mid-work and bring it back (docs/decisions/0022).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from lab.net import LOOPBACK, free_port, wait_for_port

HAPROXY_USUAL_PLACE = Path("/usr/sbin/haproxy")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def haproxy_binary() -> str | None:
    """Where haproxy is, or None when it is not installed."""
    found = shutil.which("haproxy")
    if found is None and HAPROXY_USUAL_PLACE.exists():
        return str(HAPROXY_USUAL_PLACE)
    return found


def haproxy_config(port: int, replica_ports: list[int]) -> str:
    """Round robin over the replicas, each checked on /health twice a second; a request whose
    connection a dead replica refuses is sent to another (retry-on conn-failure, redispatch):
    nothing was sent yet, so even a POST is safe to send again."""
    servers = "\n".join(
        f"    server r{i + 1} {LOOPBACK}:{p} check" for i, p in enumerate(replica_ports)
    )
    return f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    retry-on conn-failure
    option redispatch 1
frontend ota
    bind {LOOPBACK}:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1
{servers}
"""


@dataclass
class Replica:
    """One `ota server run` process: its port, its log, the process while it runs."""

    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@dataclass
class ServerReplicas:
    """The replicas and HAProxy in front of them (`url`)."""

    url: str
    replicas: list[Replica]
    env: dict[str, str]
    haproxy: subprocess.Popen[bytes] | None = None

    def start(self, *indexes: int) -> None:
        """Start the replicas at `indexes` (again) and wait until each answers /health."""
        for index in indexes:
            replica = self.replicas[index]
            command = [_ota(), "server", "run", "--port", str(replica.port), "--no-renew"]
            with replica.log.open("ab") as log:
                replica.proc = subprocess.Popen(
                    command, env=self.env, stdout=log, stderr=subprocess.STDOUT
                )
        for index in indexes:
            _wait_healthy(self.replicas[index])

    def kill(self, index: int) -> None:
        """SIGKILL replica `index`: no shutdown, its database sessions end with its sockets."""
        replica = self.replicas[index]
        if replica.proc is not None:
            replica.proc.send_signal(signal.SIGKILL)
            replica.proc.wait(timeout=STOP_TIMEOUT_S)
            replica.proc = None

    def health(self, index: int) -> dict[str, object]:
        """Replica `index`'s own /health answer (not through HAProxy)."""
        answer = httpx.get(f"{self.replicas[index].url}/health", timeout=10)
        answer.raise_for_status()
        return dict(answer.json())

    def stop(self) -> None:
        for replica in self.replicas:
            if replica.proc is not None:
                replica.proc.terminate()
        for replica in self.replicas:
            if replica.proc is not None:
                _wait_or_kill(replica.proc)
                replica.proc = None
        if self.haproxy is not None:
            self.haproxy.terminate()
            _wait_or_kill(self.haproxy)
            self.haproxy = None


def _ota() -> str:
    return str(Path(sys.executable).parent / "ota")


def _wait_healthy(replica: Replica) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if replica.proc is None or replica.proc.poll() is not None:
            break
        try:
            if httpx.get(f"{replica.url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    log = replica.log.read_text(errors="replace")[-3000:]
    raise TimeoutError(f"server replica {replica.name} did not start:\n{log}")


def _wait_or_kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def server_replicas(
    haproxy: str, db_url: str, workdir: Path, *, count: int = 2, env: Mapping[str, str] = {}
) -> Iterator[ServerReplicas]:
    """`count` replicas on `db_url` (settings from OTA_* in `env`) behind HAProxy; yields
    them once every replica answers /health and HAProxy listens; all stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    replicas = [
        Replica(f"r{i + 1}", free_port(), workdir / f"server-r{i + 1}.log") for i in range(count)
    ]
    port = free_port()
    conf = workdir / "haproxy.cfg"
    conf.write_text(haproxy_config(port, [r.port for r in replicas]))
    full_env = {**os.environ, **env, "OTA_DB_URL": db_url}
    running = ServerReplicas(f"http://{LOOPBACK}:{port}", replicas, full_env)
    try:
        running.start(*range(count))
        with (workdir / "haproxy.log").open("ab") as log:
            running.haproxy = subprocess.Popen(
                [haproxy, "-db", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(port)
        yield running
    finally:
        running.stop()
