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
from collections.abc import Callable, Iterator, Mapping
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
        """Start the replicas at `indexes` (again) and wait until each answers /health;
        PortTakenError when one could not listen on its port."""
        for index in indexes:
            replica = self.replicas[index]
            command = [_ota(), "server", "run", "--port", str(replica.port), "--no-renew"]
            # one MQTT session each: replicas sharing a client id would take it from each other
            client_id = f"{self.env.get('OTA_MQTT_CLIENT_ID', 'ota-server')}-{replica.name}"
            env = {**self.env, "OTA_MQTT_CLIENT_ID": client_id}
            with replica.log.open("ab") as log:
                replica.proc = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT
                )
        for index in indexes:
            _wait_healthy(self.replicas[index])
        if self.haproxy is not None:
            self.wait_served()

    def wait_served(self) -> None:
        """Until HAProxy has a replica up to send requests to (after its next health check)."""
        if not _healthy_within(self.url, lambda: True):
            raise TimeoutError(f"HAProxy at {self.url} has no replica up")

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


class PortTakenError(RuntimeError):
    """Something else took a replica's port between `free_port` and its start."""


def _ota() -> str:
    return str(Path(sys.executable).parent / "ota")


def _healthy_within(url: str, running: Callable[[], bool]) -> bool:
    """Whether `url`/health answers 200 within START_TIMEOUT_S (False once not `running`)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and running():
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def _wait_healthy(replica: Replica) -> None:
    def running() -> bool:
        return replica.proc is not None and replica.proc.poll() is None

    if _healthy_within(replica.url, running):
        return
    log = replica.log.read_text(errors="replace")[-3000:]
    if "address already in use" in log:
        raise PortTakenError(f"{replica.name}: port {replica.port} taken")
    raise TimeoutError(f"server replica {replica.name} did not start:\n{log}")


def _start_on_some_port(running: ServerReplicas, index: int, attempts: int = 3) -> None:
    """Start a replica, on another free port if an outgoing connection took its port."""
    for _ in range(attempts - 1):
        try:
            running.start(index)
            return
        except PortTakenError:
            running.replicas[index].port = free_port()
    running.start(index)


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
    full_env = {**os.environ, **env, "OTA_DB_URL": db_url}
    running = ServerReplicas(f"http://{LOOPBACK}:{port}", replicas, full_env)
    try:
        for index in range(count):
            _start_on_some_port(running, index)
        conf = workdir / "haproxy.cfg"
        conf.write_text(haproxy_config(port, [r.port for r in replicas]))
        with (workdir / "haproxy.log").open("ab") as log:
            running.haproxy = subprocess.Popen(
                [haproxy, "-db", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(port)
        running.wait_served()
        yield running
    finally:
        running.stop()
