"""The attacks TUF's threat model names, each against the real agent on a simulated device.

The repository is `tufrepo.TufRepo` with one delegated role per channel (as signing/ makes
it: `*/<channel>/*/*`), served by `tufrepo.RepoServer`, the mirror the attacker controls.
The server's side is `Director`, which answers polls with whatever notice the attacker
likes and keeps the reports. Each attack ends with the running slot untouched (same active
and committed slot, same bytes, nothing armed, the other slot unbootable or still the same
fallback) and the refusal reported with its reason.

Covered elsewhere, not repeated here (docs/security.md lists them all): arbitrary software,
endless data, freeze and wrong model against the real server in tests/e2e/test_agent_e2e.py;
a trickled image in tests/agent/test_download_fetcher.py.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, Timestamp

from agent.config import AgentConfig
from agent.daemon import AgentDaemon
from agent.doorbell import parse_broker_url
from agent.fetcher import FetchLimits, make_fetcher
from agent.journal import Journal
from agent.outbox import Outbox
from agent.runner import Agent, AgentParts
from agent.tuf_client import TufClient
from hardware.bootcontrol import Slot
from hardware.sim import SimDevice
from hardware.sim_env import BootEnv
from lab.tufrepo import RepoServer, TufRepo
from wire import (
    AvailabilityNotice,
    FailureReason,
    PollAnswer,
    StatusReport,
    TargetCustom,
    UpdateState,
    channel_topic,
    target_name,
)

IMAGE_SIZE = 96 * 1024
SLOT_SIZE = 256 * 1024
CHANNELS = ("stable", "preview")


@dataclass
class Director:
    """The server's side of one device (`runner.ServerLink`), in the attacker's hands: it
    answers every poll with `notice` and keeps every report it is sent."""

    notice: AvailabilityNotice | None = None
    reports: list[StatusReport] = field(default_factory=list)

    def poll(self) -> PollAnswer:
        return PollAnswer(notice=self.notice)

    def send_reports(self, reports: Sequence[StatusReport]) -> set[int]:
        self.reports.extend(reports)
        return {r.seq for r in reports}

    def ack_commands(self, command_ids: Sequence[str]) -> None:
        pass


@dataclass(frozen=True)
class Running:
    """What the device runs, taken before an attack."""

    env: BootEnv
    active_sha256: str
    other_sha256: str


@dataclass
class Lab:
    """A device following `channel`, its repository, the mirror and the director."""

    root: Path
    repo: TufRepo
    mirror: RepoServer
    model: str = "board"
    device_id: str = "dev-1"
    channel: str = "stable"
    limits: FetchLimits | None = None
    director: Director = field(default_factory=Director)
    sim: SimDevice = field(init=False)
    agent: Agent = field(init=False)

    def __post_init__(self) -> None:
        self.factory_root = self.repo.root_bytes()
        self.sim = SimDevice.provision(self.root / "hw", slot_size=SLOT_SIZE, model=self.model)
        self.start()

    def start(self) -> Agent:
        """A new agent process on the device's files (as after a reboot)."""
        data = self.root / "agent"
        fetcher = make_fetcher(self.limits)
        tuf = TufClient(
            data / "tuf",
            self.mirror.metadata_url,
            self.mirror.targets_url,
            bootstrap_root=self.factory_root,
            fetcher=fetcher,
        )
        parts = AgentParts(
            device_id=self.device_id,
            model=self.model,
            boot=self.sim,
            tuf=tuf,
            fetcher=fetcher,
            server=self.director,
            journal=Journal(data / "journal.json"),
            outbox=Outbox(data / "outbox"),
            channel=lambda: self.channel,
        )
        self.agent = Agent(parts)
        self.agent.resume()
        return self.agent

    def release(
        self, version: str, *, channel: str = "stable", counter: int = 0, signed_channel: str = ""
    ) -> AvailabilityNotice:
        """Sign and publish a build with `channel`'s role; the notice a server would send."""
        path = target_name(self.model, channel, version, "rom.img")
        custom = TargetCustom(
            version=version,
            channel=signed_channel or channel,
            model=self.model,
            release_counter=counter,
        ).to_custom()
        self.repo.add_target(path, image_of(version), custom, role=channel)
        self.repo.publish()
        return AvailabilityNotice(
            release_version=version,
            target_path=path,
            channel=channel,
            model=self.model,
            rollout_id=f"r-{version}",
            percentage=100.0,
        )

    def offer(self, notice: AvailabilityNotice) -> None:
        """The director answers the next poll with `notice`; the device polls."""
        self.director.notice = notice
        self.agent.poll_once()

    def install(self, version: str, *, counter: int = 0) -> None:
        self.offer(self.release(version, counter=counter))
        assert self.agent.record.state is UpdateState.COMMITTED
        assert self.agent.current_version == version

    def running(self) -> Running:
        env = self.sim.read_env()
        return Running(env, self.slot_sha256(env.active), self.slot_sha256(env.active.other))

    def slot_sha256(self, slot: Slot) -> str:
        return hashlib.sha256(self.sim.slot_path(slot).read_bytes()).hexdigest()

    def metadata_file(self, role: str) -> Path:
        """The file the mirror serves for the newest version of `role`."""
        if role == Timestamp.type:
            return self.repo.metadata_dir / "timestamp.json"
        signed = self.repo.snapshot if role == "snapshot" else self.repo.delegated[role]
        return self.repo.metadata_dir / f"{signed.signed.version}.{role}.json"


def image_of(version: str) -> bytes:
    return hashlib.sha256(version.encode()).digest() * (IMAGE_SIZE // 32)


def assert_refused(lab: Lab, before: Running, reason: FailureReason) -> StatusReport:
    """The agent gave up with `reason`, said so to the director, and runs what it ran."""
    agent = lab.agent
    assert (agent.record.state, agent.record.reason) == (UpdateState.FAILED, reason)
    env = lab.sim.read_env()
    assert (env.active, env.committed, env.trial) == (before.env.active, before.env.committed, None)
    assert lab.slot_sha256(env.active) == before.active_sha256
    other = env.active.other
    if other not in env.unbootable:  # the old build, still the fallback it was
        assert other not in before.env.unbootable
        assert lab.slot_sha256(other) == before.other_sha256
    assert len(agent.parts.outbox) == 0
    last = lab.director.reports[-1]
    assert (last.state, last.reason, last.slot) == (UpdateState.FAILED, reason, env.active.value)
    return last


def new_repo(base: Path) -> TufRepo:
    repo = TufRepo(base)
    for channel in CHANNELS:
        repo.delegate(channel, [f"*/{channel}/*/*"])
    repo.publish()
    return repo


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    return new_repo(tmp_path / "repo")


@pytest.fixture
def mirror(repo: TufRepo) -> Iterator[RepoServer]:
    with RepoServer(repo.base) as server:
        yield server


@pytest.fixture
def lab(tmp_path: Path, repo: TufRepo, mirror: RepoServer) -> Lab:
    return Lab(tmp_path / "device", repo, mirror)


# --------------------------------------------------------------------------- metadata


def test_rollback_attack_older_metadata_is_refused(lab: Lab) -> None:
    """The mirror replays a timestamp older than one the device has already trusted."""
    replayed = lab.metadata_file(Timestamp.type).read_bytes()
    lab.install("1.0")
    before = lab.running()
    notice = lab.release("2.0")
    lab.metadata_file(Timestamp.type).write_bytes(replayed)
    lab.offer(notice)
    report = assert_refused(lab, before, FailureReason.METADATA)
    assert "BadVersionNumberError" in report.detail["error"]


@pytest.mark.parametrize("role", ["snapshot", "stable"])
def test_mix_and_match_metadata_is_refused(lab: Lab, role: str) -> None:
    """Build 2.0 was pulled; the mirror serves the newest snapshot (or channel role) file
    name with the older, properly signed content that still lists 2.0."""
    lab.install("1.0")
    before = lab.running()
    notice = lab.release("2.0")
    listing_the_pulled_build = lab.metadata_file(role).read_bytes()
    del lab.repo.delegated["stable"].signed.targets[notice.target_path]
    lab.repo.publish()
    lab.metadata_file(role).write_bytes(listing_the_pulled_build)
    lab.offer(notice)
    report = assert_refused(lab, before, FailureReason.METADATA)
    assert "BadVersionNumberError" in report.detail["error"]


def test_slow_retrieval_of_metadata_is_cut_off(tmp_path: Path, repo: TufRepo) -> None:
    """The mirror trickles 16 bytes every 20 ms; the device wants 10 kB/s over 0.3 s."""
    with RepoServer(repo.base) as mirror:
        limits = FetchLimits(read_timeout=2.0, min_rate=10_000, rate_window=0.3)
        lab = Lab(tmp_path / "device", repo, mirror, limits=limits)
        before = lab.running()
        notice = lab.release("1.0")
        mirror.faults.trickle, mirror.faults.trickle_metadata = 0.02, True
        started = time.monotonic()
        lab.offer(notice)
        report = assert_refused(lab, before, FailureReason.DOWNLOAD)
    assert "slow retrieval" in report.detail["error"]
    assert time.monotonic() - started < 10


def forge_timestamp(lab: Lab, signer: Signer, *, version_bump: int) -> None:
    """Re-sign the live timestamp with a far higher version (what a stolen key allows)."""
    path = lab.metadata_file(Timestamp.type)
    forged = Metadata[Timestamp].from_bytes(path.read_bytes())
    forged.signed.version += version_bump
    forged.signatures.clear()
    forged.sign(signer)
    path.write_bytes(forged.to_bytes())


def rotate_timestamp_key(repo: TufRepo) -> None:
    """A new root that revokes the timestamp key and trusts a new one (published next)."""
    root = repo.root.signed
    root.revoke_key(repo.signers[Timestamp.type].public_key.keyid, Timestamp.type)
    repo.signers[Timestamp.type] = CryptoSigner.generate_ed25519()
    root.add_key(repo.signers[Timestamp.type].public_key, Timestamp.type)
    root.version += 1


def test_fast_forward_attack_is_recovered_by_rotating_the_timestamp_key(lab: Lab) -> None:
    """An attacker with the timestamp key pushes version +1,000,000: the device trusts it,
    so every honest timestamp after it looks like a rollback and is refused (the device is
    frozen). Rotating the timestamp key in root makes the forged file unverifiable, and the
    device takes honest metadata again, without re-provisioning."""
    lab.install("1.0")
    notice = lab.release("2.0")
    forge_timestamp(lab, lab.repo.signers[Timestamp.type], version_bump=1_000_000)
    lab.offer(notice)  # accepted: properly signed, and it names the honest snapshot
    assert lab.agent.current_version == "2.0"

    before = lab.running()
    lab.offer(lab.release("3.0"))
    report = assert_refused(lab, before, FailureReason.METADATA)
    assert "BadVersionNumberError" in report.detail["error"]

    rotate_timestamp_key(lab.repo)
    lab.install("4.0")
    assert lab.sim.read_env().committed is not before.env.active


# --------------------------------------------------------------------------- the target


def test_a_preview_build_offered_by_a_poll_answer_is_refused_and_reported(lab: Lab) -> None:
    """The server tells a stable device to install a properly signed preview build."""
    before = lab.running()
    notice = lab.release("2.0", channel="preview")
    lab.offer(notice)
    report = assert_refused(lab, before, FailureReason.WRONG_CHANNEL)
    assert report.target_version == "2.0"
    assert "signed for channel 'preview'" in report.detail["error"]
    lab.agent.poll_once()  # the same answer again: refused once, not once per poll
    assert lab.director.reports[-1] == report


def test_a_preview_key_cannot_sign_a_stable_build(lab: Lab) -> None:
    """Whoever holds the preview key writes "stable" into its target's signed fields. The
    path patterns keep it under `*/preview/*/*`, and the agent checks that the target came
    through the stable role (not only what the custom fields say)."""
    before = lab.running()
    notice = lab.release("2.0", channel="preview", signed_channel="stable")
    lab.offer(notice)
    report = assert_refused(lab, before, FailureReason.WRONG_CHANNEL)
    assert "came through role 'preview'" in report.detail["error"]


def test_a_tester_who_joined_preview_installs_the_preview_build(lab: Lab) -> None:
    """The channel is read at each check: joining preview needs no agent restart."""
    lab.install("1.0")
    lab.channel = "preview"  # what `ota-agent join-preview` leaves in the data dir
    lab.offer(lab.release("2.0", channel="preview"))
    assert lab.agent.record.state is UpdateState.COMMITTED
    assert lab.agent.current_version == "2.0"


def test_a_release_counter_that_does_not_go_up_is_refused_after_a_restart(lab: Lab) -> None:
    """2.0 has a newer version but the release counter of the build it would replace: the
    counter of the running build was journaled with it and survives a restart."""
    lab.install("1.0", counter=7)
    before = lab.running()
    lab.start()
    assert lab.agent.record.slot_releases[before.env.active.value].release_counter == 7
    lab.offer(lab.release("2.0", counter=7))
    report = assert_refused(lab, before, FailureReason.DOWNGRADE)
    assert "release counter 7 is not above the running build's 7" in report.detail["error"]
    lab.install("2.1", counter=8)


# --------------------------------------------------------------------------- over MQTT


def publish_retained(broker_url: str, topic: str, payload: bytes) -> None:
    host, port, _ = parse_broker_url(broker_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"attacker-{uuid.uuid4().hex}")
    client.connect(host, port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.mosquitto
def test_a_preview_build_rung_in_over_mqtt_is_refused_and_reported(
    tmp_path: Path, repo: TufRepo, mirror: RepoServer, mosquitto_url: str
) -> None:
    """Someone who can publish on the stable notice topic (a broker without ACLs, a stolen
    server credential) points the stable fleet at the preview build."""
    unique = uuid.uuid4().hex[:8]
    lab = Lab(tmp_path / "device", repo, mirror, model=f"board-{unique}", device_id=unique)
    config = AgentConfig(
        device_id=lab.device_id,
        model=lab.model,
        channel="stable",
        server_url="http://127.0.0.1:9",  # unused: the director answers polls
        data_dir=lab.root / "agent",
        trusted_root=tmp_path / "unused-root.json",
        broker_url=mosquitto_url,
        poll_interval_s=600.0,
    )
    daemon = AgentDaemon(config, lab.agent)
    before = lab.running()
    notice = lab.release("2.0", channel="preview")
    topic = channel_topic("stable", lab.model)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: daemon.doorbell is not None and daemon.doorbell.connected)
        publish_retained(mosquitto_url, topic, notice.to_json())
        wait_for(lambda: any(r.state is UpdateState.FAILED for r in lab.director.reports))
    finally:
        stop.set()
        daemon.wake()
        thread.join(timeout=10)
        publish_retained(mosquitto_url, topic, b"")  # clear the retained notice
    assert_refused(lab, before, FailureReason.WRONG_CHANNEL)
