"""A fleet of light simulated devices: thousands in a few processes, speaking the agent's
protocol to a real server and a real broker (`ota-lab simulate --devices N`, bench/fleet.py).

Each process runs its devices on one thread that drives every device's paho client through a
selector (paho's external-loop API: no thread per client) and a small pool of HTTP threads
sharing one connection pool. What a device says is what the agent says, through the agent's
own pieces: it enrolls with an ed25519 key of its own (`agent.identity.DeviceKey`,
`agent.server_api.ServerApi`: challenge, signed enrollment, access token), logs in to the
broker with its id and the broker secret it got, subscribes to its channel notice and its
command topic, polls after connecting and then on a jittered timer, decides with the notice's
rollout bucket (`wire.rollout`), and reports every state it enters as a `StatusReport` with
the next sequence number, published on its status topic and kept in an outbox until an HTTP
POST acknowledges it.

Compromises, so that ten thousand devices fit on two cores (docs/scaling.md):
- TUF: one python-tuf refresh (`agent.tuf_client.TufClient`, against the real server) per
  process and release, shared by its devices; each device itself fetches `timestamp.json` (the
  request every refresh starts with) and the target, and checks length and sha256 against the
  shared verified target info.
- Installing is instant (no slot, no reboot): downloading, installed, rebooting, trial, then
  committed, or rolling_back and rolled_back for a device whose health check fails.
- A device flushes its outbox over HTTP once its update rests (the agent flushes after every
  step); every report is still published over MQTT the moment it is made.
- A share of the fleet is offline: enrolled, never connected.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import logging
import multiprocessing
import os
import queue
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
import urllib3
from paho.mqtt.enums import CallbackAPIVersion

from agent.doorbell import SUBSCRIBE_RETRY_S, refused_topics
from agent.errors import AgentError
from agent.identity import DeviceKey
from agent.server_api import ServerApi
from agent.tuf_client import TargetInfo, TufClient
from wire import (
    TUF_METADATA_PATH,
    TUF_TARGETS_PATH,
    AvailabilityNotice,
    FailureReason,
    ProtocolError,
    StatusReport,
    UpdateState,
    channel_topic,
    device_client_id,
    device_cmd_topic,
    device_status_topic,
)
from wire.rollout import in_rollout
from wire.versions import is_newer

log = logging.getLogger(__name__)

KEEPALIVE_S: Final = 60
RECONNECT_S: Final = 2.0
REPLY_TIMEOUT_S: Final = 600.0
HTTP_TIMEOUT = urllib3.Timeout(connect=10.0, read=60.0)


@dataclass(frozen=True)
class FleetOptions:
    """The fleet: how many devices, where the server and broker are, how they behave."""

    server_url: str
    # mqtt://host:port as devices reach it (they log in with their own id); several, comma
    # separated (a broker cluster's nodes): the devices are spread over them
    broker_url: str
    enrollment_token: str
    trusted_root: Path  # the provisioned root.json
    workdir: Path  # each process's TUF metadata goes under it
    devices: int
    processes: int = 2
    http_threads: int = 8
    model: str = "board"
    channel: str = "stable"
    initial_version: str = "1.0.0"
    offline_share: float = 0.05
    unhealthy_share: float = 0.05
    poll_interval_s: float = 600.0
    poll_jitter: float = 0.5
    start_jitter_s: float = 2.0  # a device starts its update this long after the notice, at most
    id_prefix: str = "sim"
    seed: int = 1

    def device_ids(self, index: int) -> list[str]:
        """The ids process `index` runs (round robin over the fleet)."""
        return [f"{self.id_prefix}-{n:07d}" for n in range(index, self.devices, self.processes)]


@dataclass
class FleetStats:
    """What the devices saw, summed over the processes."""

    online: int = 0
    connected: int = 0
    polled: int = 0
    notified_at: list[float] = field(default_factory=list)  # wall clock, one per device
    reports_made: int = 0
    reports_acked: int = 0
    resting: int = 0  # devices whose update finished (committed or rolled back)
    committed: int = 0
    rolled_back: int = 0
    errors: int = 0
    subscriptions_refused: int = 0  # topics a SUBACK refused (0x80): that device hears nothing
    latencies_ms: list[float] = field(default_factory=list)  # device HTTP requests

    def add(self, other: FleetStats) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            setattr(self, name, mine + value)


# --------------------------------------------------------------------------- the parent


class Fleet:
    """The simulator's processes, driven phase by phase: enroll, connect, then watch."""

    def __init__(self, options: FleetOptions) -> None:
        self.options = options
        self._pipes: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []

    def __enter__(self) -> Fleet:
        context = multiprocessing.get_context("spawn")
        for index in range(self.options.processes):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker_main, args=(self.options, index, child), daemon=True
            )
            proc.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(proc)
        return self

    def __exit__(self, *exc: object) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self._procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.kill()

    def _ask(self, command: str) -> list[Any]:
        for pipe in self._pipes:
            pipe.send((command,))
        answers = []
        for pipe in self._pipes:
            if not pipe.poll(REPLY_TIMEOUT_S):
                raise TimeoutError(f"a simulator process did not answer {command!r}")
            answer = pipe.recv()
            if isinstance(answer, BaseException):
                raise answer
            answers.append(answer)
        return answers

    def enroll(self) -> int:
        """Enroll every device (online or not); returns how many enrolled."""
        return sum(self._ask("enroll"))

    def connect(self) -> int:
        """Connect the online devices to the broker (each polls once after connecting)."""
        return sum(self._ask("connect"))

    def restart(self, times: int = 1) -> int:
        """Every connected device starts again (a fleet-wide power cut): as the agent does
        after every start, it reports where it is, over MQTT at once; its outbox keeps the
        report for the next flush. `times` restarts in a row; returns the reports made."""
        return sum(sum(self._ask("restart")) for _ in range(times))

    def flush(self) -> None:
        """Every device POSTs what its outbox holds now."""
        self._ask("flush")

    def mark(self) -> None:
        """Start measuring: forget the latencies of what came before (enrolling, connecting)."""
        self._ask("mark")

    def stats(self) -> FleetStats:
        total = FleetStats()
        for part in self._ask("stats"):
            total.add(part)
        return total


# --------------------------------------------------------------------------- a device


@dataclass
class _Device:
    device_id: str
    api: ServerApi
    offline: bool
    unhealthy: bool
    version: str
    slot: str = "a"
    secret: str = ""
    seq: int = -1
    outbox: dict[int, StatusReport] = field(default_factory=dict)
    client: mqtt.Client | None = None
    # SUBSCRIBE's mid -> its topics, and whether it asks again for refused ones
    subscribing: dict[int, tuple[list[str], bool]] = field(default_factory=dict)
    polls: int = 0  # polls scheduled so far: one chain of polls, as the agent has one loop
    notified_at: float | None = None
    busy: bool = False
    target: str = ""  # the release it is updating to, or finished with
    state: UpdateState = UpdateState.IDLE  # the last it reported
    reason: FailureReason = FailureReason.NONE

    def report(
        self, state: UpdateState, reason: FailureReason = FailureReason.NONE
    ) -> StatusReport:
        self.seq += 1
        self.state, self.reason = state, reason
        report = StatusReport(
            device_id=self.device_id,
            seq=self.seq,
            state=state,
            current_version=self.version,
            target_version=self.target,
            slot=self.slot,
            reason=reason,
            at=time.time(),
        )
        self.outbox[report.seq] = report
        return report


# --------------------------------------------------------------------------- a process


def _worker_main(options: FleetOptions, index: int, pipe: Connection) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        worker = _Worker(options, index, pipe)
    except Exception as exc:  # the parent gets it as its answer
        pipe.send(exc)
        raise
    worker.run()


class _Worker:
    """One process's devices: a selector loop for MQTT and timers, threads for HTTP."""

    def __init__(self, options: FleetOptions, index: int, pipe: Connection) -> None:
        self.options = options
        self.index = index
        self.pipe = pipe
        self.http = urllib3.PoolManager(
            num_pools=4, maxsize=options.http_threads, retries=False, timeout=HTTP_TIMEOUT
        )
        self.pool = ThreadPoolExecutor(options.http_threads, thread_name_prefix="sim-http")
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)  # the loop thread wakes itself too: never block on it
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.selector.register(pipe, selectors.EVENT_READ, "pipe")
        self.outgoing: queue.SimpleQueue[tuple[_Device, StatusReport]] = queue.SimpleQueue()
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.timer_ids = itertools.count()
        self.rng = random.Random(options.seed * 1000 + index)
        self.stats = FleetStats()
        self.lock = threading.Lock()
        self.tuf = TufClient(
            options.workdir / f"tuf-{index}",
            options.server_url.rstrip("/") + TUF_METADATA_PATH,
            options.server_url.rstrip("/") + TUF_TARGETS_PATH,
            bootstrap_root=options.trusted_root.read_bytes(),
        )
        self.targets: dict[str, TargetInfo] = {}
        self.tuf_lock = threading.Lock()
        self.devices = [self._device(device_id) for device_id in options.device_ids(index)]
        self.by_client: dict[mqtt.Client, _Device] = {}
        self.running = True

    def _device(self, device_id: str) -> _Device:
        draw = self.rng.random()
        offline = draw < self.options.offline_share
        unhealthy = not offline and self.rng.random() < self.options.unhealthy_share
        api = ServerApi(self.options.server_url, device_id, DeviceKey.generate(), http=self.http)
        return _Device(device_id, api, offline, unhealthy, self.options.initial_version)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        while self.running:
            timeout = 0.5
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
            for key, events in self.selector.select(timeout):
                self._ready(key, events)
            self._publish_outgoing()
            while True:
                try:
                    call = self.calls.get_nowait()
                except queue.Empty:
                    break
                call()
            self._run_due_timers()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for device in self.devices:
            if device.client is not None:
                device.client.disconnect()

    def _ready(self, key: selectors.SelectorKey, events: int) -> None:
        if key.data == "wake":
            with contextlib.suppress(BlockingIOError):
                self.wake_r.recv(65536)
        elif key.data == "pipe":
            self._command(self.pipe.recv()[0])
        else:
            client: mqtt.Client = key.data
            if events & selectors.EVENT_READ:
                client.loop_read()
            if events & selectors.EVENT_WRITE:
                client.loop_write()

    def _command(self, command: str) -> None:
        try:
            if command == "enroll":
                self.pipe.send(self._enroll_all())
            elif command == "connect":
                self.pipe.send(self._connect_all())
            elif command == "stats":
                with self.lock:
                    self.pipe.send(self.stats)
            elif command == "restart":
                self.pipe.send(self._restart_all())
            elif command == "flush":
                list(self.pool.map(self._flush, self.devices))
                self.pipe.send(True)
            elif command == "mark":
                with self.lock:
                    self.stats.latencies_ms = []
                self.pipe.send(True)
            elif command == "stop":
                self.running = False
        except Exception as exc:  # the parent gets it as its answer
            log.exception("simulator process %d: %s failed", self.index, command)
            self.pipe.send(exc)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake-up is pending already
            self.wake_w.send(b"x")

    def _later(self, delay_s: float, job: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (time.monotonic() + delay_s, next(self.timer_ids), job))

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, job = heapq.heappop(self.timers)
            job()

    # ------------------------------------------------------------------ enrolling

    def _enroll_all(self) -> int:
        done = list(self.pool.map(self._enroll, self.devices))
        return sum(done)

    def _enroll(self, device: _Device) -> bool:
        try:
            device.secret = self._timed(
                lambda: device.api.enroll(
                    self.options.enrollment_token, self.options.model, self.options.channel
                )
            )
        except AgentError as exc:
            log.warning("%s did not enroll: %s", device.device_id, exc)
            self._count_error()
            return False
        return True

    # ------------------------------------------------------------------ MQTT

    def _connect_all(self) -> int:
        brokers = [
            u.partition("://")[2].rpartition(":") for u in self.options.broker_url.split(",")
        ]
        online = [d for d in self.devices if not d.offline and d.secret]
        with self.lock:
            self.stats.online = len(online)
        for number, device in enumerate(online):
            host, _, port = brokers[(number * self.options.processes + self.index) % len(brokers)]
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=device_client_id(device.device_id),
                clean_session=False,
            )
            client.username_pw_set(device.device_id, device.secret)
            client.on_connect = self._on_connect
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
            client.on_socket_open = self._on_socket_open
            client.on_socket_close = self._on_socket_close
            client.on_socket_register_write = self._on_register_write
            client.on_socket_unregister_write = self._on_unregister_write
            device.client = client
            self.by_client[client] = device
            client.connect(host, int(port), keepalive=KEEPALIVE_S)
        self._later(1.0, self._misc)
        return len(online)

    def _restart_all(self) -> int:
        made = 0
        for device in self.devices:
            if device.client is None or device.busy or not device.client.is_connected():
                continue
            self._say(device, device.state, device.reason)
            made += 1
        return made

    def _misc(self) -> None:
        """paho's housekeeping (pings, retries) for every client; reconnect the dropped."""
        for client, device in self.by_client.items():
            if client.is_connected():
                client.loop_misc()
            elif client.socket() is None and device.client is client:
                with contextlib.suppress(OSError):  # again at the next round
                    client.reconnect()
        self._later(RECONNECT_S if self.running else 1.0, self._misc)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(sock, selectors.EVENT_READ, client)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        device = self.by_client[client]
        if reason_code.is_failure:
            log.warning("%s: broker refused: %s", device.device_id, reason_code)
            self._count_error()
            return
        topics = [channel_topic(self.options.channel, self.options.model)]
        self._subscribe(device, [*topics, device_cmd_topic(device.device_id)])
        with self.lock:
            self.stats.connected += 1
        if device.seq < 0:  # the agent's first report after it starts: idle, factory build
            self._say(device, UpdateState.IDLE)
        # after every connect the agent asks the server over HTTP anyway
        self._wake_device(device)

    def _subscribe(self, device: _Device, topics: list[str], *, again: bool = False) -> None:
        if device.client is None or not device.client.is_connected():
            return  # the next connect subscribes to everything anyway
        result, mid = device.client.subscribe([(topic, 1) for topic in topics])
        if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            device.subscribing[mid] = (topics, again)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        """As the agent (agent/doorbell.py): a refused topic is asked for again a little later
        (a NATS cluster under load times out creating the subscription's consumer), and its
        grant wakes the device as a connect does."""
        device = self.by_client[client]
        topics, again = device.subscribing.pop(mid, ([], False))
        refused = refused_topics(topics, reason_codes)
        if refused:
            log.info("%s: broker refused %s; asking again", device.device_id, ", ".join(refused))
            with self.lock:
                self.stats.subscriptions_refused += len(refused)
            self._later(SUBSCRIBE_RETRY_S, lambda: self._subscribe(device, refused, again=True))
        elif again:
            self._wake_device(device)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        device = self.by_client[client]
        if msg.topic.endswith("/cmd"):
            return  # commands: this fleet has none to obey (a poll would hand them out too)
        try:
            notice = AvailabilityNotice.from_json(bytes(msg.payload))
        except ProtocolError as exc:
            log.warning("%s: bad notice: %s", device.device_id, exc)
            return
        self._consider(device, notice)

    def _publish_outgoing(self) -> None:
        while True:
            try:
                device, report = self.outgoing.get_nowait()
            except queue.Empty:
                return
            if device.client is not None and device.client.is_connected():
                device.client.publish(device_status_topic(device.device_id), report.to_json(), 1)

    # ------------------------------------------------------------------ behaviour

    def _consider(self, device: _Device, notice: AvailabilityNotice) -> None:
        """A notice heard (MQTT) or answered (poll); on the loop thread."""
        if notice.paused or not in_rollout(device.device_id, notice.rollout_id, notice.percentage):
            return
        if device.busy or not is_newer(notice.release_version, device.version):
            return
        if device.target == notice.release_version:
            return  # tried already (rolled back): the agent does not retry the same build
        if device.notified_at is None:
            device.notified_at = time.time()
            with self.lock:
                self.stats.notified_at.append(device.notified_at)
        device.busy = True
        delay = self.rng.uniform(0, self.options.start_jitter_s)
        self._later(delay, lambda: self._submit(self._update, device, notice))

    def _submit(self, job: Callable[..., None], *args: Any) -> None:
        self.pool.submit(self._guarded, job, *args)

    def _guarded(self, job: Callable[..., None], *args: Any) -> None:
        try:
            job(*args)
        except Exception:  # one device's surprise must not end the pool's thread
            log.exception("a simulated device's %s failed", job.__name__)
            self._count_error()

    def _wake_device(self, device: _Device) -> None:
        """A poll soon (jittered, so a fleet's reconnects do not land in one instant), in
        place of the one the interval would bring (loop thread)."""
        self._schedule_poll(device, self.rng.uniform(0, 5.0))

    def _schedule_poll(self, device: _Device, delay_s: float) -> None:
        device.polls += 1
        chain = device.polls
        self._later(delay_s, lambda: self._poll_if_current(device, chain))

    def _poll_if_current(self, device: _Device, chain: int) -> None:
        if device.polls == chain:  # not replaced by a later wake
            self._submit(self._poll, device, chain)

    def _next_poll(self, device: _Device, chain: int, delay_s: float) -> None:
        if device.polls == chain:  # else a wake during the poll scheduled the next already
            self._schedule_poll(device, delay_s)

    def _poll(self, device: _Device, chain: int) -> None:
        """The agent's poll (HTTP thread): maybe a notice; then the next, jittered."""
        try:
            answer = self._timed(device.api.poll)
        except AgentError as exc:
            log.info("%s: poll failed: %s", device.device_id, exc)
            self._count_error()
        else:
            with self.lock:
                self.stats.polled += 1
            if answer.notice is not None:
                notice = answer.notice
                self._on_loop(lambda: self._consider(device, notice))
        interval = self.options.poll_interval_s
        delay = max(0.1, interval * (1 + self.rng.uniform(-1, 1) * self.options.poll_jitter))
        self._on_loop(lambda: self._next_poll(device, chain, delay))
        self._flush(device)

    def _on_loop(self, job: Callable[[], None]) -> None:
        """Run `job` on the loop thread (the selector and timers are not thread-safe)."""
        self.calls.put(job)
        self._wake()

    def _update(self, device: _Device, notice: AvailabilityNotice) -> None:
        """One update, start to rest (HTTP thread)."""
        device.target = notice.release_version
        self._say(device, UpdateState.DOWNLOADING)
        try:
            self._download(device, notice.target_path)
        except (AgentError, ValueError) as exc:
            log.info("%s: download failed: %s", device.device_id, exc)
            self._count_error()
            self._say(device, UpdateState.FAILED, FailureReason.DOWNLOAD)
            self._rest(device, committed=False)
            return
        self._say(device, UpdateState.INSTALLED)
        self._say(device, UpdateState.REBOOTING)
        device.slot = "b" if device.slot == "a" else "a"
        self._say(device, UpdateState.TRIAL)
        if device.unhealthy:
            self._say(device, UpdateState.ROLLING_BACK, FailureReason.HEALTH_CHECK)
            device.slot = "b" if device.slot == "a" else "a"
            self._say(device, UpdateState.ROLLED_BACK, FailureReason.HEALTH_CHECK)
            self._rest(device, committed=False)
            return
        device.version = notice.release_version
        self._say(device, UpdateState.COMMITTED)
        self._rest(device, committed=True)

    def _say(
        self, device: _Device, state: UpdateState, reason: FailureReason = FailureReason.NONE
    ) -> None:
        with self.lock:
            report = device.report(state, reason)
            self.stats.reports_made += 1
        self.outgoing.put((device, report))
        self._wake()

    def _rest(self, device: _Device, *, committed: bool) -> None:
        self._flush(device)
        device.busy = False
        with self.lock:
            self.stats.resting += 1
            self.stats.committed += committed
            self.stats.rolled_back += not committed

    def _flush(self, device: _Device) -> None:
        """POST what the outbox holds; keep what the server did not acknowledge."""
        with self.lock:
            pending = [device.outbox[seq] for seq in sorted(device.outbox)]
        if not pending:
            return
        try:
            acked = self._timed(lambda: device.api.send_reports(pending))
        except AgentError as exc:
            log.info("%s: reports kept for later: %s", device.device_id, exc)
            self._count_error()
            return
        with self.lock:
            for seq in acked:
                device.outbox.pop(seq, None)
            self.stats.reports_acked += len(acked)

    def _download(self, device: _Device, target_path: str) -> None:
        info = self._target(target_path)
        base = self.options.server_url.rstrip("/")
        self._get(base + TUF_METADATA_PATH + "timestamp.json")
        data = self._get(self.tuf.target_url(info))
        if len(data) != info.length or hashlib.sha256(data).hexdigest() != info.sha256:
            raise ValueError(f"{target_path}: the bytes do not match the signed length and hash")

    def _target(self, target_path: str) -> TargetInfo:
        """The process's one real TUF refresh per release, shared by its devices."""
        with self.tuf_lock:
            if target_path not in self.targets:
                self.tuf.refresh()
                self.targets[target_path] = self.tuf.get_target(target_path)
            return self.targets[target_path]

    def _get(self, url: str) -> bytes:
        def get() -> bytes:
            resp = self.http.request("GET", url)
            if resp.status != 200:
                raise ValueError(f"GET {url}: HTTP {resp.status}")
            return bytes(resp.data)

        data: bytes = self._timed(get)
        return data

    def _timed(self, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return call()
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            with self.lock:
                self.stats.latencies_ms.append(elapsed_ms)

    def _count_error(self) -> None:
        with self.lock:
            self.stats.errors += 1


def default_processes() -> int:
    """Two simulator processes per core, at least two."""
    return max(2, 2 * (os.cpu_count() or 1))
