"""Power cuts for the agent on the simulated device: a harness shipped with the package
(structlog's habit), used by tests/e2e/test_power_cuts.py and bench/torture.py.

A `PoweredDevice` is one simulated board (`hardware.sim.SimDevice`) and its agent's data
directory. Every `power_on()` is what a real power-on is: a new `SimDevice` on the same root,
the bootloader's `boot()`, and a new `Agent` built from the same data directory (a fresh
process in all but name). The agent's journal and outbox writes go through the same
`FaultPlan` as the device's own durable steps, so one plan cuts the power at any durable step
of either: bootenv writes, slot writes and syncs, journal and outbox files (before or after
their rename), outbox acknowledgements. What a cut does to the files is `power_loss`'s: nothing
by default (every write lands in order); the lab's `CachedDisk.cut` loses what was not synced.

The harness keeps, outside the device, a ledger of every report the outbox made durable; the
`*_problems` functions compare it, the files on the device and the server's records, and
answer a list of problems (empty when all is well) so a test can assert and a benchmark count.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.download import BUFFER_SIZE
from agent.fetcher import RangeFetcher
from agent.journal import JournalRecord
from agent.machine import is_resting
from agent.outbox import COUNTER_NAME, Outbox
from agent.runner import Agent
from hardware.bootcontrol import BootControlError, Slot
from hardware.sim import ENV_FILE, FaultPlan, PowerCut, SimDevice
from hardware.sim_env import env_from_json
from wire import StatusReport, UpdateState

AgentFactory = Callable[[SimDevice], Agent]  # one boot's agent, e.g. build_agent(config, boot=)
Action = Callable[[Agent], None]
PowerLoss = Callable[[], None]  # what the power going does to the device's files
SETTLE_POLLS = 6  # polls after a power-on before a device must be at rest


class LedgerOutbox(Outbox):
    """The agent's outbox, also noting each report it made durable in a ledger the harness
    keeps outside the device (the device's own files are what a power cut may damage)."""

    def __init__(self, directory: Path, ledger: dict[int, StatusReport], plan: FaultPlan) -> None:
        super().__init__(directory, on_step=plan.step)
        self.ledger = ledger

    def add(self, build: Callable[[int], StatusReport]) -> StatusReport:
        report = super().add(build)
        self.ledger[report.seq] = report
        return report


@dataclass
class SteadyFetcher:
    """Cuts a fetcher's body into pieces of `piece` bytes: the slot writes of a download (and
    so a fault plan's step numbers) no longer depend on how the network split the body."""

    inner: RangeFetcher
    piece: int = BUFFER_SIZE

    def fetch_range(
        self, url: str, start: int = 0, *, limit: int | None = None
    ) -> Generator[bytes, None, None]:
        pending = bytearray()
        with contextlib.closing(self.inner.fetch_range(url, start, limit=limit)) as stream:
            for data in stream:
                pending += data
                while len(pending) >= self.piece:
                    yield bytes(pending[: self.piece])
                    del pending[: self.piece]
            if pending:
                yield bytes(pending)


@dataclass
class MidDownload:
    """The image fetcher, with `meanwhile()` run once after the first piece went through:
    what the world does while the device is downloading."""

    inner: RangeFetcher
    meanwhile: Callable[[], object]
    received: int = field(default=0, init=False)

    def fetch_range(
        self, url: str, start: int = 0, *, limit: int | None = None
    ) -> Generator[bytes, None, None]:
        with contextlib.closing(self.inner.fetch_range(url, start, limit=limit)) as stream:
            for data in stream:
                yield data
                first = self.received == 0
                self.received += len(data)
                if first:
                    self.meanwhile()


@dataclass(frozen=True)
class Image:
    """A complete image a slot may hold: its length and SHA-256."""

    length: int
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> Image:
        return cls(len(data), hashlib.sha256(data).hexdigest())

    def held_by(self, slot_bytes: bytes) -> bool:
        head = slot_bytes[: self.length]
        return len(head) == self.length and hashlib.sha256(head).hexdigest() == self.sha256


@dataclass
class PoweredDevice:
    """One simulated board across power cuts (see the module docstring)."""

    root: Path  # the SimDevice's directory
    data_dir: Path  # the agent's (journal.json, outbox/)
    build: AgentFactory
    ledger: dict[int, StatusReport] = field(default_factory=dict)
    booted: list[Slot] = field(default_factory=list)  # each power_on's slot (not agent reboots)
    power_cuts: int = 0
    agent: Agent | None = None
    power_loss: PowerLoss = field(default=lambda: None)  # e.g. the lab's CachedDisk.cut

    @property
    def sim(self) -> SimDevice:
        assert self.agent is not None, "the device is off: power_on() first"
        boot = self.agent.parts.boot
        assert isinstance(boot, SimDevice)
        return boot

    def power_on(self, plan: FaultPlan | None = None) -> Agent:
        """The bootloader picks a slot, then a new agent process starts (not yet resumed).
        A `plan` that cuts during the boot itself raises PowerCut, as `run` does."""
        plan = plan if plan is not None else FaultPlan.recording()
        self.agent = None
        sim = SimDevice(self.root, plan)
        try:
            self.booted.append(sim.boot())
        except PowerCut:
            self.power_cuts += 1
            self.power_loss()
            raise
        agent = self.build(sim)
        agent.parts.outbox = LedgerOutbox(agent.parts.outbox.directory, self.ledger, plan)
        agent.parts.fetcher = SteadyFetcher(agent.parts.fetcher)
        self.agent = agent
        self.arm(plan)
        return agent

    def arm(self, plan: FaultPlan) -> None:
        """From now on the running device and agent take their durable steps through `plan`."""
        agent = self.agent
        assert agent is not None, "the device is off: power_on() first"
        self.sim.faults = plan
        agent.parts.journal.on_step = plan.step
        agent.parts.outbox.on_step = plan.step

    def run(self, action: Action, plan: FaultPlan) -> PowerCut | None:
        """Run `action` on the running agent under `plan`; the cut, if the power went."""
        assert self.agent is not None, "the device is off: power_on() first"
        self.arm(plan)
        try:
            action(self.agent)
        except PowerCut as cut:
            self._power_went()
            return cut
        return None

    def boot_and_resume(self, plan: FaultPlan | None = None) -> PowerCut | None:
        """A power-on and the agent's start-up (`resume`), under `plan`."""
        try:
            self.power_on(plan)
        except PowerCut as cut:
            return cut
        return self.run(Agent.resume, plan if plan is not None else FaultPlan.recording())

    def settle(self, polls: int = SETTLE_POLLS) -> Agent:
        """Power on cleanly, resume, and poll until the agent rests with nothing to send."""
        cut = self.boot_and_resume()
        assert cut is None, "a recording plan never cuts"
        return self.rest(polls)

    def rest(self, polls: int = SETTLE_POLLS) -> Agent:
        """Poll the running agent until it rests with nothing left to send."""
        agent = self.agent
        assert agent is not None, "the device is off: power_on() first"
        for _ in range(polls):
            before = agent.record.state
            agent.poll_once()
            if at_rest(agent) and agent.record.state is before:
                return agent
        raise AssertionError(f"not at rest after {polls} polls: {agent.record.state}")

    def _power_went(self) -> None:
        """Note reports that became durable without `add` returning (cut after the rename)."""
        self.power_cuts += 1
        self.agent = None
        self.power_loss()  # before the ledger looks: only what survived the cut counts
        outbox = self.data_dir / "outbox"
        for path in sorted(outbox.glob("*.json")) if outbox.is_dir() else []:
            try:
                report = StatusReport.from_json(path.read_bytes())
            except ValueError:
                continue  # torn: torn_files() reports it
            self.ledger.setdefault(report.seq, report)


def at_rest(agent: Agent) -> bool:
    return is_resting(agent.record.state) and len(agent.parts.outbox) == 0


# ---------------------------------------------------------------------- what must hold


def torn_files(device: PoweredDevice, *, corrupt_expected: bool = False) -> list[str]:
    """Files on the device that do not parse, or were quarantined as unreadable."""
    problems: list[str] = []
    parsers: list[tuple[Path, Callable[[bytes], object]]] = [
        (device.root / ENV_FILE, env_from_json),
        (device.data_dir / "journal.json", JournalRecord.from_json),
        (device.data_dir / "outbox" / COUNTER_NAME, _json_object),
    ]
    outbox = device.data_dir / "outbox"
    if outbox.is_dir():
        parsers += [(p, StatusReport.from_json) for p in sorted(outbox.glob("*.json"))]
    for path, parse in parsers:
        problems += _parse_problem(path, parse)
    if not corrupt_expected:
        for where in (device.data_dir, outbox):
            if where.is_dir():
                problems += [f"quarantined {p}" for p in where.glob("*.corrupt-*")]
    return problems


def _parse_problem(path: Path, parse: Callable[[bytes], object]) -> list[str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        parse(raw)
    except (ValueError, TypeError, BootControlError) as exc:
        return [f"{path} does not parse: {exc}"]
    return []


def _json_object(raw: bytes) -> object:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def boot_problems(device: PoweredDevice, good: Iterable[Image]) -> list[str]:
    """The committed slot (and a booted trial slot) must hold a complete good image."""
    env = env_from_json((device.root / ENV_FILE).read_bytes())
    problems = []
    slots = {env.committed, env.active}
    for slot in sorted(slots):
        held = (device.root / f"slot_{slot.value}.img").read_bytes()
        if not any(image.held_by(held) for image in good):
            role = "committed" if slot is env.committed else "booted"
            problems.append(f"{role} slot {slot.value} holds no complete good image")
    return problems


@dataclass(frozen=True)
class ReportAudit:
    """The device's ledger of durable reports against what the server holds."""

    duplicated: list[int]  # seqs the server holds more than once
    lost: list[int]  # made durable on the device, not on the server
    unknown: list[int]  # on the server, never made durable on the device
    reused: list[int]  # the server holds another report under this seq
    out_of_order: bool  # a higher seq was made before a lower one
    final_reported: bool  # the state the device rests in is the last report

    @classmethod
    def of(
        cls,
        ledger: Mapping[int, StatusReport],
        server_reports: Iterable[Mapping[str, Any]],
        final: UpdateState,
    ) -> ReportAudit:
        held = list(server_reports)
        seqs = [int(r["seq"]) for r in held]
        by_seq = {int(r["seq"]): r for r in held}
        both = sorted(set(ledger) & set(by_seq))
        ordered = [ledger[s] for s in sorted(ledger)]
        return cls(
            duplicated=sorted({s for s in seqs if seqs.count(s) > 1}),
            lost=sorted(set(ledger) - set(by_seq)),
            unknown=sorted(set(by_seq) - set(ledger)),
            reused=[s for s in both if not _same_report(ledger[s], by_seq[s])],
            out_of_order=any(a.at > b.at for a, b in itertools.pairwise(ordered)),
            final_reported=bool(ordered) and ordered[-1].state is final,
        )

    def problems(self) -> list[str]:
        found = [
            f"{what}: seqs {seqs}"
            for what, seqs in (
                ("duplicated on the server", self.duplicated),
                ("reports lost", self.lost),
                ("on the server but never made durable", self.unknown),
                ("seqs reused for another report", self.reused),
            )
            if seqs
        ]
        if self.out_of_order:
            found.append("seqs do not increase with time")
        if not self.final_reported:
            found.append("the state the device rests in is not its last report")
        return found


def _same_report(made: StatusReport, held: Mapping[str, Any]) -> bool:
    return (made.state.value, made.at) == (held["state"], held["at"])


def report_problems(
    ledger: Mapping[int, StatusReport],
    server_reports: Iterable[Mapping[str, Any]],
    final: UpdateState,
) -> list[str]:
    """The server holds every durable report once, as made, and the final state last."""
    return ReportAudit.of(ledger, server_reports, final).problems()
