"""`ota-lab demo`: one weekly release, end to end, on embedded defaults and real parts.

Keys are made, two synthetic weekly builds are signed, the server (uvicorn, SQLite) and the
embedded broker (amqtt) listen on free loopback ports, and a fleet of simulated devices runs
the real agent in threads: real HTTP, real MQTT, real TUF, real slot files. Build 1 goes to
everyone; build 2 goes to preview, where one tester's device fails its health check and rolls
back, then to stable. What the table shows is what the server heard from the devices.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table

from agent.config import AgentConfig
from agent.daemon import AgentDaemon, build_agent
from agent.errors import AgentError
from agent.tester import FeedbackRequest, join_preview, send_feedback, vote
from hardware.sim import SimDevice
from lab.fleet import MIB, Backend, Board, daemons_running, running_backend, server_settings
from lab.processes import embedded_broker
from server.api_models import Device, Role, RolloutStatus
from server.schemas import FCodeIssue, GatesIn, RolloutIn, TokenIn, TrainAdvanceIn, TrainIn
from server.services.rollout_rules import GateConfig
from server.services.train import TrainConfig
from wire.rollout import in_rollout

BOARD = Board(model="sim", slot_size=16 * MIB, image_size=8 * MIB)
MODEL = BOARD.model
BUILDS = ("2026.47", "2026.48", "2026.49")  # baseline, good weekly build, bad weekly build
STABLE_WAVES = (10.0, 50.0, 100.0)
PREVIEW_WAVES = (50.0, 100.0)
# a handful of testers, one of them broken, a short soak: a demo, not a policy
DEMO_GATES: dict[str, Any] = {
    "min_success_rate": 0.5,
    "max_rollback_rate": 0.5,
    "min_devices": 1,
    "min_soak_s": 1.0,
}
STEP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoOptions:
    devices: int = 20
    testers: int = 5
    workdir: Path | None = None
    as_json: bool = False
    serve: bool = False  # keep the server and the fleet running for the dashboard


@dataclass
class DemoResult:
    ok: bool
    devices: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    surfacing: dict[str, Any] = field(default_factory=dict)
    rollouts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "devices": self.devices,
            "releases": self.releases,
            "steps": self.steps,
            "surfacing": self.surfacing,
            "rollouts": self.rollouts,
            "elapsed_s": round(self.elapsed_s, 2),
        }


@dataclass
class FleetDevice:
    device_id: str
    channel: str
    sim: SimDevice
    daemon: AgentDaemon
    config: AgentConfig


def run_demo(options: DemoOptions) -> DemoResult:
    console = Console(stderr=options.as_json, log_path=False)  # 80 columns: room to say
    # Twenty agents, the server and the embedded broker share one process and two cores
    # here; amqtt then logs every QoS 1 PUBACK that arrives late as an ERROR with a
    # traceback. Nothing depends on those (MQTT is a doorbell; HTTP carries the truth).
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_logs_through(console))
        workdir = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        result = _run(workdir, options, console, stack)
    if options.as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for table in summary_tables(result.devices, result.surfacing):
            console.print(table)
        verdict = "[green]ok[/]" if result.ok else "[red]FAILED[/]"
        console.print(f"demo {verdict} in {result.elapsed_s:.1f}s")
    return result


@contextlib.contextmanager
def _logs_through(console: Console) -> Iterator[None]:
    """The agents' and the server's warnings (one long line each, e.g. why a health check
    failed) through the demo's console: wrapped to the terminal's width, under the demo's own
    lines, instead of raw on stderr."""
    handler = RichHandler(
        console=console,
        show_path=False,
        markup=False,
        level=logging.WARNING,
        log_time_format="[%X]",  # as the demo's own lines
    )
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def summary_tables(devices: list[dict[str, Any]], surfacing: dict[str, Any]) -> list[Table]:
    """The tables the demo ends with (from its result, or the same keys in its --json)."""
    return [_table(devices), _surfacing_table(surfacing)]


def _run(
    workdir: Path, options: DemoOptions, console: Console, stack: contextlib.ExitStack
) -> DemoResult:
    started = time.monotonic()
    env = stack.enter_context(_services(workdir))
    fleet = _fleet(env, options)
    stack.enter_context(daemons_running([dev.daemon for dev in fleet]))
    view = _LiveView(env, console, enabled=not options.as_json)
    steps: list[dict[str, Any]] = []
    releases: list[dict[str, Any]] = []
    with view:
        steps.append(_release_step(env, view, fleet, releases, BUILDS[0], ("preview", "stable")))
        broken = next(d for d in fleet if d.channel == "preview")
        broken.sim.health_failing = True
        train, surfacing = _train_step(env, view, fleet, releases, BUILDS[1], broken)
        steps.append(train)
        steps.append(_bad_build_step(env, view, fleet, releases))
    devices = view.snapshot()
    ok = all(s["ok"] for s in steps)
    result = DemoResult(ok, devices, releases, steps, time.monotonic() - started)
    result.surfacing = surfacing
    result.rollouts = _rollouts(env)
    if options.serve:
        serve_dashboard(env, console)
    return result


def serve_dashboard(env: Backend, console: Console) -> None:
    """Print where the dashboard is and a release engineer's token, then wait for Ctrl-C
    (the server, the broker and the fleet keep running meanwhile)."""
    name = f"demo-{secrets.token_hex(3)}"
    token = env.admin.create_token(TokenIn(role=Role.RELEASE_ENGINEER, name=name)).token
    console.print(f"dashboard: {env.server_url}/signin", soft_wrap=True)
    console.print("sign in with this release engineer token:")
    console.print(token, soft_wrap=True)  # alone on its line: copied whole, never wrapped
    console.print("Ctrl-C stops the demo")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        return


ROLLOUT_KEYS = (
    "version",
    "channel",
    "rollout_id",
    "state",
    "waves_reached",
    "percentage",
    "paused_gate",
    "paused_reason",
)


def _rollouts(env: Backend) -> list[dict[str, Any]]:
    """Per release and channel, oldest first: waves reached, state, the gate that paused it."""
    rollouts = [r.model_dump(mode="json") for r in reversed(env.admin.rollouts())]
    return [{k: r.get(k) for k in ROLLOUT_KEYS} for r in rollouts]


def _staged(
    env: Backend,
    releases: list[dict[str, Any]],
    version: str,
    channel: str,
    waves: tuple[float, ...],
) -> RolloutStatus:
    """Sign the build, register it at 0 %, and start a staged rollout in waves with gates."""
    published = env.sign(version, channel=channel, notes=f"build {version}")
    release = env.register(published, percentage=0.0)
    body = RolloutIn(release_id=release.id, waves=list(waves), gates=GatesIn(**DEMO_GATES))
    rollout = env.admin.create_rollout(body)
    releases.append({**published.to_dict(), "rollout_id": rollout.rollout_id})
    return rollout


def _evaluate_until(env: Backend, view: _LiveView, rollout_id: str, states: set[str]) -> str:
    """Tick the server's scheduler now and then (it also ticks by itself) until the rollout
    reaches one of `states`; the fleet moves on its own in between."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        env.admin.evaluate_rollouts()
        state = str(env.admin.rollout(rollout_id).state)
        if state in states:
            return state
        view.snapshot()
        time.sleep(1.0)
    return state


def _train_step(
    env: Backend,
    view: _LiveView,
    fleet: list[FleetDevice],
    releases: list[dict[str, Any]],
    version: str,
    broken: FleetDevice,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weekly train: announced -> internal -> preview -> stable in waves, each stage
    moving on only when its ring's gates pass; testers speak while it sits in preview."""
    for channel in ("internal", "preview", "stable"):
        published = env.sign(version, channel=channel, notes=f"{version}")
        env.register(published, percentage=0.0)
        releases.append(published.to_dict())
    env.admin.start_train(TrainIn(version=version, model=MODEL, notes="weekly build"))
    view.say(f"train {version}: announced to testers")
    testers = [d for d in fleet if d.channel == "preview"]
    preview_done = {d.device_id: _expectation(d, version, broken) for d in testers}
    stable_done = {
        d.device_id: _expectation(d, version, broken) for d in fleet if d.channel == "stable"
    }
    stages: list[str] = []
    surfacing: dict[str, Any] = {}
    deadline = time.monotonic() + 3 * STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        body = TrainAdvanceIn(version=version, model=MODEL, force=True)  # a week is a minute
        moved = env.admin.advance_train(body).moved_to
        if moved:
            stages.append(moved)
            view.say(f"train {version}: {moved}")
        env.admin.evaluate_rollouts()
        if not surfacing and "preview" in stages and view.wait_until(preview_done, 0):
            surfacing = _testers_speak(env, view, testers)
        if _rollout_state(env, version, "stable") == "completed":
            break
        view.snapshot()
        time.sleep(1.0)
    settled = view.wait_until({**preview_done, **stable_done}, STEP_TIMEOUT_S)
    if not surfacing:  # the gates let it through before the last tester had settled
        surfacing = _testers_speak(env, view, testers)
    ok = _rollout_state(env, version, "stable") == "completed" and settled
    step = {"version": version, "channels": ["preview", "stable"], "train": stages, "ok": ok}
    return step, surfacing


def _rollout_state(env: Backend, version: str, channel: str) -> str:
    for r in env.admin.rollouts():
        if (r.version, r.channel) == (version, channel):
            return str(r.state)
    return ""


def _bad_build_step(
    env: Backend, view: _LiveView, fleet: list[FleetDevice], releases: list[dict[str, Any]]
) -> dict[str, Any]:
    """A build that fails its health check everywhere: the first preview wave's rollbacks
    trip the rollback-rate gate, the rollout pauses itself, and no one else is touched."""
    testers = [d for d in fleet if d.channel == "preview"]
    before = {r["id"]: (r["version"], r["state"]) for r in view.snapshot()}
    for dev in testers:
        dev.sim.health_failing = True
    rollout = _staged(env, releases, BUILDS[2], "preview", PREVIEW_WAVES)
    view.say(f"bad build {BUILDS[2]} goes to preview in waves {PREVIEW_WAVES}")
    state = _evaluate_until(env, view, rollout.rollout_id, {"paused", "completed"})
    status = env.admin.rollout(rollout.rollout_id)
    # the wave it paused in: usually the first; a wave that holds none of our few testers
    # passes (min_devices is capped by who the wave can reach) and the next one trips
    reached = status.percentage
    affected = {
        d.device_id for d in testers if in_rollout(d.device_id, rollout.rollout_id, reached)
    }
    # every device keeps the version it ran; those in the wave tried it and rolled back
    expected = {
        d.device_id: (before[d.device_id][0], "rolled_back")
        if d.device_id in affected
        else before[d.device_id]
        for d in testers
    }
    settled = view.wait_until(expected, STEP_TIMEOUT_S)
    ok = state == "paused" and bool(status.paused_gate) and settled
    view.say(f"{BUILDS[2]} paused by gate {status.paused_gate!r}: {status.paused_reason}")
    return {
        "version": BUILDS[2],
        "channels": ["preview"],
        "rollout": state,
        "paused_gate": status.paused_gate,
        "paused_at_percentage": reached,
        "devices_affected": sorted(affected),
        "ok": ok,
    }


TESTER_SAYS = (
    ("Camera app crashes when I open the front camera", "camera"),
    ("camera app crashes when opening the front camera", "camera"),
    ("Battery drains much faster overnight since this build", "battery"),
    ("The front camera crashes the camera app on open", "camera"),
)


def _testers_speak(env: Backend, view: _LiveView, testers: list[FleetDevice]) -> dict[str, Any]:
    """Preview testers report what broke and vote; the server groups and ranks it."""
    speakers = testers[1:]  # tester-00's own device already spoke: it rolled back
    for dev, (text, category) in zip(speakers, TESTER_SAYS, strict=False):
        request = FeedbackRequest(text=text, category=category, build=BUILDS[1])
        send_feedback(dev.config, request)
    ranked = env.admin.surfacing(BUILDS[1]).groups
    tester_groups = [g for g in ranked if g.kind == "tester"]
    if tester_groups:
        top = tester_groups[0].group_id
        for dev in speakers:
            with contextlib.suppress(AgentError):  # one vote per tester per group
                vote(dev.config, top)
    view.say(f"{len(speakers)} testers reported on {BUILDS[1]}; what surfaces first:")
    return env.admin.surfacing(BUILDS[1]).model_dump(mode="json")


# ---------------------------------------------------------------------- services


@contextlib.contextmanager
def _services(workdir: Path) -> Iterator[Backend]:
    """The embedded broker and the server (SQLite in `workdir`), each on a free port."""
    with (
        embedded_broker(server_settings(workdir).db_url) as broker_url,
        running_backend(
            workdir,
            BOARD,
            train=TrainConfig(gates=GateConfig(**DEMO_GATES), stable_waves=STABLE_WAVES),
            broker_url=broker_url,
            admin_token=secrets.token_urlsafe(16),
            enrollment_token=secrets.token_urlsafe(16),
        ) as backend,
    ):
        yield backend


def _fleet(env: Backend, options: DemoOptions) -> list[FleetDevice]:
    """Every device enrolls on stable; the testers join preview with an F-code each."""
    codes: list[str] = []
    if options.testers:
        issue = FCodeIssue(count=options.testers, expires_in_s=7 * 86400)
        codes = env.admin.issue_fcodes(issue).codes
    fleet = []
    for i in range(options.devices):
        tester = i < options.testers
        device_id = f"{'tester' if tester else 'phone'}-{i:02d}"
        sim = env.provision(device_id)
        config = env.agent_config(
            device_id,
            broker_url=env.broker_url,
            poll_interval_s=3.0,
            poll_jitter=0.5,
            health_deadline_s=10.0,
        )
        if tester:
            join_preview(config, codes[i])  # the joined channel is kept in the data dir
        daemon = AgentDaemon(config, build_agent(config, boot=sim), rng=random.Random(i))
        fleet.append(FleetDevice(device_id, daemon.config.channel, sim, daemon, config))
    return fleet


# ---------------------------------------------------------------------- releases


def _release_step(
    env: Backend,
    view: _LiveView,
    fleet: list[FleetDevice],
    releases: list[dict[str, Any]],
    version: str,
    channels: tuple[str, ...],
    broken: FleetDevice | None = None,
) -> dict[str, Any]:
    for channel in channels:
        published = env.sign(version, channel=channel, notes=f"Orange Friday build {version}")
        answer = env.register(published)
        releases.append({**published.to_dict(), "rollout_id": answer.rollout_id or ""})
    view.say(f"build {version} published to {', '.join(channels)}")
    expected = {
        d.device_id: _expectation(d, version, broken) for d in fleet if d.channel in channels
    }
    ok = view.wait_until(expected, STEP_TIMEOUT_S)
    return {"version": version, "channels": list(channels), "ok": ok}


def _expectation(dev: FleetDevice, version: str, broken: FleetDevice | None) -> tuple[str, str]:
    if broken is not None and dev is broken:
        return (BUILDS[0], "rolled_back")
    return (version, "committed")


# ---------------------------------------------------------------------- the view


class _LiveView:
    """What the server knows about the fleet, refreshed while we wait."""

    def __init__(self, env: Backend, console: Console, *, enabled: bool) -> None:
        self._env = env
        self._console = console
        self._enabled = enabled
        self._live: Live | None = None
        self._last: list[dict[str, Any]] = []

    def __enter__(self) -> _LiveView:
        if self._enabled:
            self._live = Live(
                _table([]), console=self._console, refresh_per_second=4, transient=True
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def say(self, text: str) -> None:
        if self._enabled:
            self._console.log(text)

    def snapshot(self) -> list[dict[str, Any]]:
        devices = self._env.devices()
        counts = {d.device_id: len(self._env.reports(d.device_id)) for d in devices}
        self._last = [_row(d, counts[d.device_id]) for d in devices]
        if self._live is not None:
            self._live.update(_table(self._last))
        return self._last

    def wait_until(self, expected: dict[str, tuple[str, str]], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            rows = {r["id"]: r for r in self.snapshot()}
            if all(_matches(rows.get(k), want) for k, want in expected.items()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def _matches(row: dict[str, Any] | None, want: tuple[str, str]) -> bool:
    return row is not None and (row["version"], row["state"]) == want


def _row(device: Device, reports: int) -> dict[str, Any]:
    return {
        "id": device.device_id,
        "channel": device.channel,
        "version": device.current_version,
        "slot": device.slot,
        "state": device.state,
        "reports": reports,
    }


def _surfacing_table(surfacing: dict[str, Any]) -> Table:
    table = Table(title=f"What surfaces first in {surfacing.get('build', '?')}")
    for name in ("rank", "kind", "problem", "devices", "votes", "blocking"):
        table.add_column(name)
    for g in surfacing.get("groups", []):
        table.add_row(
            str(g.get("rank", "")),
            str(g.get("kind", "")),
            str(g.get("title", ""))[:60],
            str(g.get("devices", 0)),
            str(g.get("votes", 0)),
            "yes" if g.get("blocking") else "",
        )
    return table


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Orange Friday fleet (as the server sees it)")
    for name in ("device", "channel", "version", "slot", "state", "reports"):
        table.add_column(name)
    for r in rows:
        style = {"committed": "green", "rolled_back": "yellow", "failed": "red"}.get(r["state"])
        table.add_row(
            r["id"],
            r["channel"],
            r["version"],
            r["slot"],
            r["state"],
            str(r["reports"]),
            style=style,
        )
    return table
