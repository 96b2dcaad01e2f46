"""Fleet benchmark (issue 12): the real server, a real broker and `lab.fleetsim`'s devices;
a release goes out to the whole fleet and one JSON object says how it went.

    .venv/bin/python bench/fleet.py --devices 10000 --db postgres --broker mosquitto

Set-up (not measured): signing keys and a small signed image, the database, the broker (its
logins regenerated from the registry and reloaded once the fleet enrolled), the server (`ota
server run` in its own process, so that its CPU and memory are its own), the fleet enrolled
over HTTP and connected. Then the clock starts and the release is registered at 100 %: the
server publishes the retained notice, every online device installs it and reports.

- `notified_99_s` / `notified_100_s`: from the release call until 99 % / all online devices
  had the notice (MQTT, or a poll's answer);
- `ingested_all_s`: until the server held every report the devices made;
- `reports_per_s`: ingestion capacity, measured after the rollout: every online device
  restarts at once and reports its state over MQTT (as the agent does after every start);
  the burst's size over the time until all of it was stored (`burst_reports`,
  `burst_ingested_s`); `rollout_reports_per_s` is the rollout's own reports over the span in
  which they arrived (first to last `received_at`), which the devices' pace bounds;
- `p50_ms` / `p99_ms`: the devices' HTTP requests after the start (poll, reports, TUF);
- `server_cpu_s`: the server process's user + system CPU after the start;
  `server_peak_rss_mb`: its peak resident memory (VmHWM);
- `reports_sent` (every report the devices made, from their first start) and
  `reports_stored` (rows in the reports table): equal when nothing was lost or doubled.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, select

from lab.fleet import ADMIN_TOKEN, ENROLLMENT_TOKEN, synthetic_image
from lab.fleetsim import Fleet, FleetOptions, FleetStats
from lab.net import LOOPBACK, free_port, wait_for_port
from lab.processes import mosquitto, mosquitto_binary, with_login
from server.api_client import OtaApi
from server.cli_admin import registry_broker_devices
from server.db import make_engine, make_sessions
from server.models import Report
from server.mosquitto import write_broker_config
from server.schemas import ReleaseIn
from server.testing import fresh_postgres_database
from signing.keys import init_keys
from signing.repo import publish_release

PG_ADMIN_URL = os.environ.get("OTA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MODEL = "board"
NEW_VERSION = "2.0.0"
SAMPLE_S = 0.25
SERVER_START_S = 60.0


class BenchError(Exception):
    """The benchmark cannot run as asked; the message says why (one line)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="sqlite")
    parser.add_argument("--broker", choices=("mosquitto", "cluster"), default="mosquitto")
    parser.add_argument("--processes", type=int, default=4, help="simulator processes")
    parser.add_argument("--http-threads", type=int, default=8, help="per simulator process")
    parser.add_argument("--image-kib", type=int, default=4)
    parser.add_argument("--offline", type=float, default=0.05)
    parser.add_argument("--unhealthy", type=float, default=0.05)
    parser.add_argument("--poll-interval", type=float, default=600.0)
    parser.add_argument("--start-jitter", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--restarts", type=int, default=5, help="fleet-wide restarts of the ingestion burst"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--workers", type=int, default=1, help="`ota server run --workers` (PostgreSQL only)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the server in this process under cProfile (every thread) and write the "
        "hottest functions to stderr; its CPU then includes the fleet's parent",
    )
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error("--devices must be at least 1")
    # SIGTERM unwinds like Ctrl-C, so that the server, broker, fleet and database are cleaned up
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        result = run(args)
    except BenchError as exc:
        print(f"bench/fleet.py: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0 if result["reports_sent"] == result["reports_stored"] else 1


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        release = _signed_release(workdir, args.image_kib)
        db_url = _database(stack, args.db, workdir)
        broker = _broker(stack, args.broker, workdir)
        if args.profile:
            server_url, server = _profiled_server(stack, workdir, db_url, broker.server_url)
        else:
            server_url, server = _server(stack, workdir, db_url, broker, args.workers)
        options = FleetOptions(
            server_url=server_url,
            broker_url=broker.device_url,
            enrollment_token=ENROLLMENT_TOKEN,
            trusted_root=workdir / "repo" / "root.json",
            workdir=workdir / "fleet",
            devices=args.devices,
            processes=max(1, min(args.processes, args.devices)),
            http_threads=args.http_threads,
            model=MODEL,
            offline_share=args.offline,
            unhealthy_share=args.unhealthy,
            poll_interval_s=args.poll_interval,
            start_jitter_s=args.start_jitter,
        )
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        fleet = stack.enter_context(Fleet(options))
        fleet.enroll()
        broker.reload_logins(db_url)
        online = fleet.connect()
        _wait(lambda: _settled_before(fleet.stats(), online), args.timeout, "the fleet to connect")
        fleet.mark()
        measured = _roll_out(args, fleet, server, server_url, release, engine, online)
        given = {"devices": args.devices, "db": args.db, "broker": args.broker}
        return {**given, "workers": args.workers, **measured}


def _roll_out(
    args: argparse.Namespace,
    fleet: Fleet,
    server: subprocess.Popen[bytes],
    server_url: str,
    release: ReleaseIn,
    engine: Any,
    online: int,
) -> dict[str, Any]:
    cpu_before = _cpu_s(server.pid)
    started_wall = datetime.now(UTC)
    t0 = time.time()
    with OtaApi(server_url, ADMIN_TOKEN, timeout=60) as admin:
        admin.register_release(release)
    ingested_at = None
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        stats = fleet.stats()
        stored = _count(engine)
        if stats.resting >= online and stored >= stats.reports_made and ingested_at is None:
            ingested_at = time.time()
        if ingested_at is not None and stats.reports_acked >= stats.reports_made:
            break
        time.sleep(SAMPLE_S)
    cpu_s = _cpu_s(server.pid) - cpu_before
    burst = _burst(fleet, engine, args.restarts, args.timeout)
    stats = fleet.stats()
    stored = _count(engine)
    window_count, first, last = _received_window(engine, started_wall)
    span = (last - first).total_seconds() if first and last else 0.0
    notified = sorted(t - t0 for t in stats.notified_at)
    return {
        "notified_99_s": _percentile(notified, 0.99, online),
        "notified_100_s": _percentile(notified, 1.0, online),
        "ingested_all_s": None if ingested_at is None else round(ingested_at - t0, 2),
        "reports_per_s": burst["reports_per_s"],
        "burst_reports": burst["reports"],
        "burst_ingested_s": burst["ingested_s"],
        "rollout_reports_per_s": round(window_count / span, 1) if span > 0 else None,
        "p50_ms": _quantile(stats.latencies_ms, 0.5),
        "p99_ms": _quantile(stats.latencies_ms, 0.99),
        "server_cpu_s": round(cpu_s, 2),
        "server_peak_rss_mb": _peak_rss_mb(server.pid),
        "reports_sent": stats.reports_made,
        "reports_stored": stored,
        "online": online,
        "committed": stats.committed,
        "rolled_back": stats.rolled_back,
        "device_errors": stats.errors,
        "subscriptions_refused": stats.subscriptions_refused,
        "reconnects": stats.connected - online,  # connects beyond each online device's first
        "polls": stats.polled,
    }


def _burst(fleet: Fleet, engine: Any, restarts: int, timeout_s: float) -> dict[str, Any]:
    """Ingestion capacity: every online device restarts at once and reports where it is over
    MQTT (the agent's report after every start); how fast the server stores the burst.
    Then the devices flush their outboxes over HTTP, so that every report is acknowledged."""
    before = _count(engine)
    started = time.time()
    made = fleet.restart(restarts)
    deadline = time.monotonic() + timeout_s
    ingested_s = None
    while time.monotonic() < deadline:
        if _count(engine) >= before + made:
            ingested_s = time.time() - started
            break
        time.sleep(SAMPLE_S / 5)
    fleet.flush()
    return {
        "reports": made,
        "ingested_s": None if ingested_s is None else round(ingested_s, 2),
        "reports_per_s": round(made / ingested_s, 1) if ingested_s else None,
    }


def _settled_before(stats: FleetStats, online: int) -> bool:
    """Every online device connected, polled once and had its first report acknowledged."""
    return (
        stats.connected >= online
        and stats.polled >= online
        and (stats.reports_acked >= stats.reports_made)
    )


# --------------------------------------------------------------------------- parts


def _signed_release(workdir: Path, image_kib: int) -> ReleaseIn:
    repo = workdir / "repo"
    init_keys(repo)
    image = synthetic_image(workdir / "images" / f"rom-{NEW_VERSION}.img", image_kib * 1024)
    published = publish_release(
        repo, image, version=NEW_VERSION, channel="stable", model=MODEL, chunk_size=4096
    )
    return ReleaseIn.model_validate({**published.to_dict(), "percentage": 100.0})


def _database(stack: contextlib.ExitStack, kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'server.db'}"
    try:
        return stack.enter_context(fresh_postgres_database(PG_ADMIN_URL))
    except psycopg.Error as exc:  # one line, not a traceback
        raise BenchError(f"no PostgreSQL at {PG_ADMIN_URL.split('@')[-1]}: {exc}") from None


class _Broker:
    """A mosquitto whose logins are the server's user and, after `reload_logins`, every
    enrolled device (regenerated from the registry as `ota broker mosquitto-config` does)."""

    def __init__(self, stack: contextlib.ExitStack, workdir: Path) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BenchError("mosquitto is not installed (apt-get install mosquitto)")
        self.dir = workdir / "broker"
        self.port, self.tls_port, self.server_port = free_port(), free_port(), free_port()
        self.password = secrets.token_urlsafe(16)
        paths = self._write([])
        self.proc = stack.enter_context(
            mosquitto(binary, paths.conf, self.port, workdir / "mosquitto.log")
        )
        self.device_url = f"mqtt://{LOOPBACK}:{self.port}"
        # the server's own listener: its workers share the login, each with its own client id
        server_listener = f"mqtt://{LOOPBACK}:{self.server_port}"
        self.server_url = with_login(server_listener, "ota-server", self.password)

    def _write(self, devices: list[Any]) -> Any:
        return write_broker_config(
            self.dir,
            devices,
            port=self.tls_port,
            server_password=self.password,
            plain_port=self.port,
            server_port=self.server_port,
            run_as_user=getpass.getuser(),  # as root, mosquitto would drop to a user without access
        )

    def reload_logins(self, db_url: str) -> None:
        engine = make_engine(db_url)
        try:
            with make_sessions(engine)() as session:
                devices, _ = registry_broker_devices(session)
        finally:
            engine.dispose()
        self._write(devices)
        self.proc.send_signal(signal.SIGHUP)  # mosquitto re-reads its password file and ACL
        time.sleep(1.0)


class _Cluster:
    """A three-node NATS cluster (JetStream, MQTT listener) from `lab.natscluster`: anonymous
    on loopback, so there are no logins to reload; devices are spread over the nodes."""

    def __init__(self, stack: contextlib.ExitStack, workdir: Path) -> None:
        from lab.natscluster import nats_binary, nats_cluster

        binary = nats_binary()
        if binary is None:
            raise BenchError("nats-server is not installed (apt-get install nats-server)")
        cluster = stack.enter_context(nats_cluster(binary, workdir / "nats"))
        self.device_url = ",".join(cluster.mqtt_urls)
        self.server_url = cluster.mqtt_urls[0]

    def reload_logins(self, db_url: str) -> None:
        """Nothing to do: the lab's cluster takes anonymous logins."""


def _broker(stack: contextlib.ExitStack, kind: str, workdir: Path) -> _Broker | _Cluster:
    if kind == "cluster":
        return _Cluster(stack, workdir)
    return _Broker(stack, workdir)


def _server(
    stack: contextlib.ExitStack,
    workdir: Path,
    db_url: str,
    broker: _Broker | _Cluster,
    workers: int = 1,
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {
        **os.environ,
        "OTA_DB_URL": db_url,
        "OTA_REPO_DIR": str(workdir / "repo" / "repository"),
        "OTA_BROKER_URL": broker.server_url,
        "OTA_WORKERS": str(workers),
        "OTA_ADMIN_TOKEN": ADMIN_TOKEN,
        "OTA_ENROLLMENT_TOKEN": ENROLLMENT_TOKEN,
        "OTA_ROLLOUT_TICK_S": "0",
    }
    for name in ("ENROLL", "REDEEM", "AUTH_FAILURES"):
        for per in ("ADDRESS", "DEVICE"):
            env[f"OTA_RATE_{name}_PER_{per}"] = "10000000/minute"  # the fleet is on loopback
    if isinstance(broker, _Cluster):
        env["OTA_MQTT_SHARE_GROUP"] = ""  # NATS delivers no `$share/` subscription (0025)
    ota = Path(sys.executable).parent / "ota"
    log = (workdir / "server.log").open("wb")
    stack.callback(log.close)
    proc = subprocess.Popen(
        [str(ota), "server", "run", "--port", str(port), "--no-renew"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(_stop, proc)
    try:
        wait_for_port(port, timeout=SERVER_START_S)
    except TimeoutError:
        raise BenchError(f"the server did not start; see {workdir / 'server.log'}") from None
    return f"http://{LOOPBACK}:{port}", proc


class _Self:
    """This process, standing in for the server's when it runs here (--profile)."""

    pid = os.getpid()


def _profiled_server(
    stack: contextlib.ExitStack, workdir: Path, db_url: str, broker_url: str
) -> tuple[str, Any]:
    import cProfile
    import pstats
    import threading

    from lab.fleet import server_settings
    from lab.processes import live_server

    profiles: list[cProfile.Profile] = []

    def start_profiling(*_: object) -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU, not waiting
        profiles.append(profile)
        sys.setprofile(None)
        profile.enable()

    def report() -> None:
        threading.setprofile(None)
        for profile in profiles:
            profile.disable()
        stats = pstats.Stats(profiles[0], stream=sys.stderr)
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(workdir / "server.prof")
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)

    threading.setprofile(start_profiling)
    settings = server_settings(
        workdir, db_url=db_url, broker_url=broker_url, rollout_tick_s=0, online_keys_dir=None
    )
    url = stack.enter_context(live_server(settings))
    stack.callback(report)
    return url, _Self()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


# --------------------------------------------------------------------------- measuring


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(SAMPLE_S)


def _count(engine: Any) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Report)) or 0)


def _received_window(engine: Any, since: datetime) -> tuple[int, datetime | None, datetime | None]:
    query = select(func.count(), func.min(Report.received_at), func.max(Report.received_at)).where(
        Report.received_at >= since
    )
    with engine.connect() as connection:
        count, first, last = connection.execute(query).one()
    return int(count), _aware(first), _aware(last)


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the server's workers with --workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(child) for child in task.read_text().split()]
    return found


def _cpu_s(pid: int) -> float:
    """The server's CPU seconds, its live workers' included."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for each in _process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _peak_rss_mb(pid: int) -> float:
    """The sum of the peak RSS of the server's processes."""
    total_kib = 0
    for each in _process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
    return round(total_kib / 1024, 1)


def _percentile(sorted_s: list[float], share: float, population: int) -> float | None:
    """When `share` of `population` had it (None if fewer ever did)."""
    needed = max(1, int(population * share + 0.999999)) if population else 0
    if needed == 0 or len(sorted_s) < needed:
        return None
    return round(sorted_s[needed - 1], 3)


def _quantile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 1)


if __name__ == "__main__":
    sys.exit(main())
