"""The agent installs from a delta when one fits, and falls back to the full image by itself.

A signed repository (`tufrepo.TufRepo`, top-level targets) served over loopback HTTP
(`tufrepo.RepoServer`), a simulated device, and patches made by `romdelta.make` exactly as
signing/ makes them. Each device first installs 1.0 in full, then is offered 2.0, which has a
delta from 1.0 beside it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent import decide
from agent.fetcher import make_fetcher
from agent.journal import Journal, JournalRecord
from agent.outbox import Outbox
from agent.runner import Agent, AgentParts
from agent.tuf_client import TufClient
from hardware.bootcontrol import Slot
from hardware.sim import FaultPlan, PowerCut, SimDevice
from lab.tufrepo import RepoServer, TufRepo, chunked_rom
from romdelta.make import MakeOptions, make_patch
from wire import (
    AvailabilityNotice,
    DeltaCustom,
    PollAnswer,
    StatusReport,
    UpdateState,
    delta_target_name,
    target_name,
)

BS = 4096
CHUNK = 16 * BS
SLOT_SIZE = 512 * 1024
MODEL = "board"
OPTIONS = MakeOptions(segment_size=8 * BS, reference_size=16 * BS, workers=1)


def images() -> tuple[bytes, bytes]:
    """1.0 and 2.0: 2.0 keeps most blocks (some moved), edits a few, adds new ones."""
    rng = random.Random(7)
    old = [rng.randbytes(BS) for _ in range(64)]
    new = old[8:40] + old[:8] + [bytes(BS)] * 4
    for block in old[40:56]:
        edited = bytearray(block)
        edited[100:110] = rng.randbytes(10)
        new.append(bytes(edited))
    new += [rng.randbytes(BS) for _ in range(6)]
    return b"".join(old), b"".join(new) + b"tail"


OLD, NEW = images()


@dataclass
class Director:
    """The server's side: answers polls with `notice`, keeps the reports."""

    notice: AvailabilityNotice | None = None
    reports: list[StatusReport] = field(default_factory=list)

    def poll(self) -> PollAnswer:
        return PollAnswer(notice=self.notice)

    def send_reports(self, reports: Sequence[StatusReport]) -> set[int]:
        self.reports.extend(reports)
        return {r.seq for r in reports}


@dataclass
class Lab:
    root: Path
    repo: TufRepo
    mirror: RepoServer
    director: Director = field(default_factory=Director)

    def __post_init__(self) -> None:
        self.sim = SimDevice.provision(self.root / "hw", slot_size=SLOT_SIZE, model=MODEL)
        self.agent = self.start()

    def start(self) -> Agent:
        """A new agent process on the device's files (as after a reboot)."""
        data = self.root / "agent"
        fetcher = make_fetcher()
        tuf = TufClient(
            data / "tuf",
            self.mirror.metadata_url,
            self.mirror.targets_url,
            bootstrap_root=self.repo.root_bytes(),
            fetcher=fetcher,
        )
        parts = AgentParts(
            device_id="dev-1",
            model=MODEL,
            boot=self.sim,
            tuf=tuf,
            fetcher=fetcher,
            server=self.director,
            journal=Journal(data / "journal.json"),
            outbox=Outbox(data / "outbox"),
            channel=lambda: "stable",
            delta_dir=data / "delta",
        )
        self.agent = Agent(parts)
        self.agent.resume()
        return self.agent

    def offer(self, version: str, image: bytes) -> None:
        path = self.full_path(version)
        custom = chunked_rom(image, CHUNK, version=version, model=MODEL)
        if path not in self.repo.targets.signed.targets:
            self.repo.add_target(path, image, custom)
            self.repo.publish()
        self.director.notice = AvailabilityNotice(
            release_version=version,
            target_path=path,
            channel="stable",
            model=MODEL,
            rollout_id=f"r-{version}",
            percentage=100.0,
        )
        self.agent.poll_once()

    def add_delta(self, patch: bytes, *, source: bytes = OLD, target: bytes = NEW) -> str:
        """Sign `patch` as the delta from 1.0 (image `source`) to 2.0 (image `target`)."""
        full = self.full_path("2.0")
        custom = DeltaCustom(
            source_version="1.0",
            source_sha256=hashlib.sha256(source).hexdigest(),
            source_length=len(source),
            target_path=full,
            target_sha256=hashlib.sha256(target).hexdigest(),
            target_length=len(target),
        )
        path = delta_target_name(full, "1.0")
        self.repo.add_target(path, patch, custom.to_custom())
        self.repo.publish()
        return path

    @staticmethod
    def full_path(version: str) -> str:
        return target_name(MODEL, "stable", version, "rom.img")

    def served(self, target_path: str) -> int:
        stored = self.repo.target_file(target_path).relative_to(self.repo.base)
        return self.mirror.faults.served[f"/{stored}"]

    def slot_holds(self, slot: Slot, image: bytes) -> bool:
        with self.sim.slot_path(slot).open("rb") as f:
            return f.read(len(image)) == image

    def last_detail(self, state: UpdateState) -> dict[str, object]:
        return next(r.detail for r in reversed(self.director.reports) if r.state is state)


def patch_between(tmp: Path, old: bytes, new: bytes) -> bytes:
    (tmp / "old.img").write_bytes(old)
    (tmp / "new.img").write_bytes(new)
    make_patch(tmp / "old.img", tmp / "new.img", tmp / "patch", OPTIONS)
    return (tmp / "patch").read_bytes()


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    return TufRepo(tmp_path / "repo")


@pytest.fixture
def mirror(repo: TufRepo) -> Iterator[RepoServer]:
    with RepoServer(repo.base) as server:
        yield server


@pytest.fixture
def lab(tmp_path: Path, repo: TufRepo, mirror: RepoServer) -> Lab:
    made = Lab(tmp_path / "device", repo, mirror)
    made.offer("1.0", OLD)
    assert made.agent.record.state is UpdateState.COMMITTED
    assert made.sim.status().active is Slot.B
    return made


def assert_runs_new(lab: Lab) -> None:
    assert lab.agent.record.state is UpdateState.COMMITTED
    assert lab.agent.current_version == "2.0"
    assert lab.sim.status().active is Slot.A
    assert lab.slot_holds(Slot.A, NEW)


def test_a_delta_is_installed_and_the_full_image_is_not_fetched(lab: Lab, tmp_path: Path) -> None:
    patch = patch_between(tmp_path, OLD, NEW)
    assert len(patch) < len(NEW) // 4
    delta = lab.add_delta(patch)
    lab.offer("2.0", NEW)
    assert_runs_new(lab)
    assert lab.served(delta) == len(patch)
    assert lab.served(lab.full_path("2.0")) == 0
    detail = lab.last_detail(UpdateState.INSTALLED)
    assert detail["delta"] == delta
    assert "delta_fallback" not in detail
    assert not any((tmp_path / "device" / "agent" / "delta").iterdir())  # patch removed


def test_a_tampered_delta_falls_back_to_the_full_image_and_says_so(
    lab: Lab, tmp_path: Path
) -> None:
    delta = lab.add_delta(patch_between(tmp_path, OLD, NEW))
    stored = lab.repo.target_file(delta)
    damaged = bytearray(stored.read_bytes())
    damaged[-20] ^= 0xFF  # the mirror serves other bytes than were signed
    stored.write_bytes(bytes(damaged))
    lab.offer("2.0", NEW)
    assert_runs_new(lab)
    assert lab.served(lab.full_path("2.0")) > 0
    fallback = lab.last_detail(UpdateState.DOWNLOADING)["delta_fallback"]
    assert "sha256" in str(fallback) or "hash" in str(fallback)
    assert "delta_fallback" in lab.last_detail(UpdateState.INSTALLED)


def test_a_signed_delta_that_makes_other_bytes_is_never_installed(lab: Lab, tmp_path: Path) -> None:
    wrong = NEW[:-4] + b"evil"  # a patch to other bytes, signed as if it made 2.0
    lab.add_delta(patch_between(tmp_path, OLD, wrong))
    lab.offer("2.0", NEW)
    assert_runs_new(lab)
    assert "does not match" in str(lab.last_detail(UpdateState.INSTALLED)["delta_fallback"])


def test_a_running_slot_that_is_not_the_source_gets_the_full_image(
    lab: Lab, tmp_path: Path
) -> None:
    delta = lab.add_delta(patch_between(tmp_path, OLD, NEW))
    with lab.sim.slot_path(Slot.B).open("r+b") as running:  # e.g. mounted read-write once
        running.seek(1024)
        running.write(b"changed on the device")
    lab.offer("2.0", NEW)
    assert_runs_new(lab)
    assert lab.served(delta) == 0  # not even downloaded
    assert "does not hold 1.0" in str(lab.last_detail(UpdateState.INSTALLED)["delta_fallback"])


def test_a_power_cut_while_the_delta_is_applied_recovers(
    tmp_path: Path, repo: TufRepo, mirror: RepoServer
) -> None:
    patch = patch_between(tmp_path, OLD, NEW)
    recording = Lab(tmp_path / "recording", repo, mirror)
    recording.offer("1.0", OLD)
    recording.add_delta(patch)
    plan = recording.sim.faults = FaultPlan.recording()
    recording.offer("2.0", NEW)
    writes = [i for i, step in enumerate(plan.steps) if step == "slot.write"]
    assert len(writes) > 3

    lab = Lab(tmp_path / "device", repo, mirror)
    lab.offer("1.0", OLD)
    lab.sim.faults = FaultPlan(cut_at=writes[len(writes) // 2])
    with pytest.raises(PowerCut):
        lab.offer("2.0", NEW)
    journal = JournalRecord.from_json((tmp_path / "device" / "agent" / "journal.json").read_bytes())
    assert journal.state is UpdateState.DOWNLOADING
    assert journal.detail["delta"] == delta_target_name(Lab.full_path("2.0"), "1.0")
    assert Slot.A in lab.sim.read_env().unbootable  # the half-written slot cannot boot

    lab.sim = SimDevice(lab.sim.root)  # power on again: the bootloader, then a new agent
    lab.sim.boot()
    lab.start()
    assert_runs_new(lab)
    assert lab.served(lab.full_path("2.0")) == 0  # the apply started over from the delta


def test_a_delta_is_tried_until_it_failed_or_the_step_keeps_dying() -> None:
    assert decide.try_delta(JournalRecord(step_attempts=1))
    assert decide.try_delta(JournalRecord(step_attempts=decide.DELTA_ATTEMPTS))
    assert not decide.try_delta(JournalRecord(step_attempts=decide.DELTA_ATTEMPTS + 1))
    assert not decide.try_delta(JournalRecord(step_attempts=1, detail={"delta_fallback": "x"}))
