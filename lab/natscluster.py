"""A three-node NATS cluster with JetStream and its MQTT listener, on free loopback ports.

NATS keeps MQTT's state (sessions, QoS 1 messages not yet acknowledged, retained messages) in
JetStream streams replicated over the cluster, so a retained notice published on one node is
heard by a device on another, and a device whose node dies resumes its session on another
node. Each node gets its own configuration file, store folder and log in `workdir`; `kill`
and `restart` let the fault tests take one node down (SIGKILL) and bring it back with its
store. Anonymous and loopback only, as the lab's other brokers (docs/decisions/0022).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lab.net import LOOPBACK, free_port, is_listening, wait_for_port

NATS_USUAL_PLACE = Path("/usr/sbin/nats-server")
READY_TIMEOUT_S = 60.0  # a loaded 2-core machine has taken >30 s to elect leaders
STOP_TIMEOUT_S = 10.0
CLUSTER_NAME = "ota-lab"
START_ATTEMPTS = 3


class NodeExitedError(RuntimeError):
    """A node's process ended while we waited for it (say, a port it was given was taken)."""


def nats_binary() -> str | None:
    """Where nats-server is, or None when it is not installed."""
    found = shutil.which("nats-server")
    if found is None and NATS_USUAL_PLACE.exists():
        return str(NATS_USUAL_PLACE)
    return found


@dataclass(frozen=True)
class NatsNode:
    """One node's name, ports and files."""

    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    monitor_port: int
    workdir: Path

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{LOOPBACK}:{self.mqtt_port}"

    @property
    def conf(self) -> Path:
        return self.workdir / f"{self.name}.conf"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def config_text(self, peers: list[NatsNode], replicas: int) -> str:
        routes = ", ".join(f'"nats-route://{LOOPBACK}:{p.cluster_port}"' for p in peers)
        store = self.workdir / f"{self.name}-store"
        return (
            f"server_name: {self.name}\n"
            f"listen: {LOOPBACK}:{self.client_port}\n"
            f"http: {LOOPBACK}:{self.monitor_port}\n"
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
            f"cluster {{ name: {CLUSTER_NAME}, listen: {LOOPBACK}:{self.cluster_port},"
            f" routes: [{routes}] }}\n"
            # MQTT's streams on every node: any one node may die without losing a message.
            # Each QoS 1 subscription is a JetStream consumer (two per device): kept in memory,
            # still replicated, instead of a few files each (with files, 1,000 devices ran a
            # node out of descriptors: "too many open files" at 20,000).
            f"mqtt {{ listen: {LOOPBACK}:{self.mqtt_port}, stream_replicas: {replicas},"
            " consumer_memory_storage: true }\n"
        )


@dataclass
class NatsCluster:
    """The running nodes; `mqtt_urls` in node order, one per node."""

    binary: str
    nodes: list[NatsNode]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def mqtt_urls(self) -> list[str]:
        return [node.mqtt_url for node in self.nodes]

    def start(self, index: int) -> None:
        """Start node `index` (again) with its configuration and its store as they are."""
        node = self.nodes[index]
        with node.log.open("ab") as log:
            self.procs[node.name] = subprocess.Popen(
                [self.binary, "-c", str(node.conf)], stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self, index: int) -> None:
        """SIGKILL node `index`: no goodbye to its peers or its clients."""
        proc = self.procs.pop(self.nodes[index].name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)

    def restart(self, index: int) -> None:
        """Start node `index` again; ready once it listens for MQTT (its copies of MQTT's
        streams may take a while to catch up, and /healthz says not ok meanwhile: that is the
        cluster's business, and clients are served by the other nodes)."""
        self.start(index)
        node = self.nodes[index]
        try:
            wait_for_port(node.mqtt_port, timeout=READY_TIMEOUT_S)
            self._check_alive(node)
        except TimeoutError:
            raise TimeoutError(f"NATS node {node.name} did not restart:\n{self.logs()}") from None

    def wait_ready(self, indexes: list[int] | None = None) -> None:
        """Until each node (or those at `indexes`) listens for MQTT and says JetStream is
        healthy (a meta leader elected, its streams and consumers current); TimeoutError
        with the logs."""
        chosen = [self.nodes[i] for i in (range(len(self.nodes)) if indexes is None else indexes)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        for node in chosen:
            healthz = f"http://{LOOPBACK}:{node.monitor_port}/healthz"
            while (answer := _healthz(healthz)) != "ok" or not is_listening(node.mqtt_port):
                self._check_alive(node)
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"NATS node {node.name} not ready after {READY_TIMEOUT_S:.0f}s"
                        f" (/healthz: {answer or 'no answer'}):\n{self.logs()}"
                    )
                time.sleep(0.1)

    def _check_alive(self, node: NatsNode) -> None:
        proc = self.procs.get(node.name)
        if proc is not None and proc.poll() is not None:
            raise NodeExitedError(
                f"NATS node {node.name} exited with {proc.returncode}:\n{self.logs()}"
            )

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(
            f"--- {n.name}\n{n.log.read_text(errors='replace')[-3000:]}"
            for n in self.nodes
            if n.log.exists()
        )


def _healthz(url: str) -> str:
    """'ok', what else the node says (its status and error), or '' when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # loopback http
            said = json.loads(answer.read())
    except urllib.error.HTTPError as refused:  # 503 with a body while JetStream is not current
        try:
            said = json.loads(refused.read())
        except ValueError:
            return f"HTTP {refused.code}"
    except (OSError, ValueError):
        return ""
    if not isinstance(said, dict):
        return "not a JSON object"
    if said.get("status") == "ok":
        return "ok"
    return f"{said.get('status')}: {said.get('error', '')}"[:200]


def plan_nodes(workdir: Path, size: int) -> list[NatsNode]:
    """`size` nodes n1..nN, each on four free loopback ports."""
    return [
        NatsNode(f"n{i + 1}", free_port(), free_port(), free_port(), free_port(), workdir)
        for i in range(size)
    ]


@contextmanager
def nats_cluster(binary: str, workdir: Path, size: int = 3) -> Iterator[NatsCluster]:
    """`size` nodes routed to each other, JetStream on, MQTT on; ready once every node says
    JetStream is healthy; stopped (SIGTERM, then SIGKILL) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = _started_cluster(binary, workdir, size)
    try:
        yield cluster
    finally:
        cluster.stop()


def _started_cluster(binary: str, workdir: Path, size: int) -> NatsCluster:
    """A ready cluster. A node that exits while starting (a free port it was given was taken
    before it bound it) is the lab's luck, not NATS's: start again on other ports, up to
    START_ATTEMPTS times; the last NodeExitedError or TimeoutError goes to the caller."""
    for _ in range(START_ATTEMPTS - 1):
        try:
            return _start_once(binary, workdir, size)
        except NodeExitedError:
            for store in workdir.glob("*-store"):
                shutil.rmtree(store)
    return _start_once(binary, workdir, size)


def _start_once(binary: str, workdir: Path, size: int) -> NatsCluster:
    nodes = plan_nodes(workdir, size)
    replicas = min(3, size)
    for node in nodes:
        node.conf.write_text(node.config_text([p for p in nodes if p is not node], replicas))
    cluster = NatsCluster(binary, nodes)
    try:
        for index in range(size):
            cluster.start(index)
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster
