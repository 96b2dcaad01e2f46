"""A lab fleet: release keys, the real server (uvicorn, SQLite) and maybe a broker, with
simulated devices running the real agent against them over loopback HTTP and MQTT.

`running_backend` starts the server side in a work directory and yields a `Backend`: the
release engineer's side (sign a synthetic build, register it, read what the server heard)
and the devices' side (enroll, an agent config, a resumed agent on a `SimDevice`). What the
devices are and what is built for them is a `Board`. `daemons_running` runs agent daemons in
threads, as devices run on their own; tests that decide when a device looks call
`Agent.poll_once()` instead.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.daemon import AgentDaemon, build_agent
from agent.identity import device_key_or_new, save_broker_secret
from agent.runner import Agent
from agent.server_api import ServerApi
from hardware.sim import SimDevice
from lab.processes import live_server, without_login
from server.api_client import OtaApi
from server.api_models import Device, Release, Report
from server.schemas import ReleaseIn
from server.settings import RateLimitConfig, Settings
from signing.keys import init_keys
from signing.repo import DEFAULT_CHUNK_SIZE, PublishedRelease, publish_release

ADMIN_TOKEN = "admin-token"
ENROLLMENT_TOKEN = "enroll-token"
KIB = 1024
MIB = 1024 * KIB
API_TIMEOUT_S = 20.0
MAX_REPORTS = 10000  # of one device, read back at once
DAEMON_STOP_TIMEOUT_S = 15.0
LAB_RATE_LIMITS = RateLimitConfig.all_at("100000/minute")  # the whole fleet is on loopback


@dataclass(frozen=True)
class Board:
    """The simulated hardware of a fleet and the builds made for it."""

    model: str = "board"
    slot_size: int = 8 * MIB
    image_size: int = 3 * MIB
    chunk_size: int = DEFAULT_CHUNK_SIZE
    android: bool = False  # builds are Android OTA packages (update_engine applies them)


@dataclass(frozen=True)
class Backend:
    """What devices and the release engineer talk to: keys in `repo`, the server (its
    SQLite file in `workdir`) at `server_url`, and the broker at `broker_url` if any (as
    devices reach it: they log in with their own id and broker secret)."""

    workdir: Path
    server_url: str
    board: Board = field(default_factory=Board)
    admin_token: str = ADMIN_TOKEN
    enrollment_token: str = ENROLLMENT_TOKEN
    broker_url: str = ""

    @property
    def repo(self) -> Path:
        return self.workdir / "repo"

    def device_dir(self, device_id: str) -> Path:
        return self.workdir / "devices" / device_id

    # ------------------------------------------------------------ the release engineer

    @cached_property
    def admin(self) -> OtaApi:
        """The server's API as the admin (the release engineer's side); closed with the
        backend by `running_backend`."""
        return OtaApi(self.server_url, self.admin_token, timeout=API_TIMEOUT_S)

    def close(self) -> None:
        if "admin" in self.__dict__:
            self.admin.close()

    def build(self, version: str, *, model: str | None = None) -> Path:
        """The synthetic image of `version` for `model` (the board's by default)."""
        model = model or self.board.model
        if self.board.android:
            ota = self.workdir / "images" / f"ota-{model}-{version}.zip"
            return synthetic_android_ota(ota, self.board.image_size)
        path = self.workdir / "images" / f"rom-{model}-{version}.img"
        return synthetic_image(path, self.board.image_size)

    def sign(
        self, version: str, *, model: str | None = None, channel: str = "stable", notes: str = ""
    ) -> PublishedRelease:
        """Sign the synthetic build of `version` into the repository (the server is not told)."""
        model = model or self.board.model
        return publish_release(
            self.repo,
            self.build(version, model=model),
            version=version,
            channel=channel,
            model=model,
            notes=notes,
            chunk_size=self.board.chunk_size,
        )

    def publish(
        self, version: str, *, model: str | None = None, channel: str = "stable", notes: str = ""
    ) -> PublishedRelease:
        """Sign the synthetic build of `version` and tell the server, as a release goes out."""
        release = self.sign(version, model=model, channel=channel, notes=notes)
        self.register(release)
        return release

    def register(self, release: PublishedRelease, *, percentage: float | None = None) -> Release:
        """Tell the server a signed release exists, as `ota release publish --server` does;
        with a `percentage` (0: for a staged rollout), held at it."""
        held = {} if percentage is None else {"percentage": percentage}
        return self.admin.register_release(ReleaseIn.model_validate({**release.to_dict(), **held}))

    def devices(self) -> list[Device]:
        return self.admin.devices()

    def device_row(self, device_id: str) -> Device:
        rows = {d.device_id: d for d in self.devices()}
        return rows[device_id]

    def reports(self, device_id: str) -> list[Report]:
        return self.admin.reports(device_id, limit=MAX_REPORTS)

    def reported_states(self, device_id: str) -> list[str]:
        """The states `device_id` reported, in its own order (seq)."""
        return [r.state for r in sorted(self.reports(device_id), key=lambda r: r.seq)]

    # ------------------------------------------------------------ the devices

    def enroll(
        self, device_id: str, channel: str = "stable", data_dir: Path | None = None
    ) -> ServerApi:
        """Enroll `device_id` with the enrollment token and a key of its own, made once in
        its agent's data directory (with the broker secret the server gave it); returns the
        device's client, signed in."""
        data_dir = data_dir or self.device_dir(device_id) / "agent"
        api = ServerApi(self.server_url, device_id, device_key_or_new(data_dir))
        secret = api.enroll(self.enrollment_token, self.board.model, channel)
        save_broker_secret(data_dir, secret)
        return api

    def agent_config(self, device_id: str, **fields: Any) -> AgentConfig:
        """An enrolled device's agent config on this backend; `fields` add or override."""
        data_dir = Path(fields.get("data_dir", self.device_dir(device_id) / "agent"))
        self.enroll(device_id, data_dir=data_dir)
        defaults: dict[str, Any] = {
            "device_id": device_id,
            "model": self.board.model,
            "channel": "stable",
            "server_url": self.server_url,
            "data_dir": data_dir,
            "trusted_root": self.repo / "root.json",
        }
        return AgentConfig(**{**defaults, **fields})

    def provision(self, device_id: str) -> SimDevice:
        """A fresh simulated board for `device_id` (slot A holds the factory image)."""
        hw = self.device_dir(device_id) / "hw"
        return SimDevice.provision(hw, slot_size=self.board.slot_size, model=self.board.model)

    def start_agent(self, device_id: str, **fields: Any) -> tuple[Agent, SimDevice]:
        """An enrolled device on a fresh board, its agent resumed and ready to poll."""
        sim = self.provision(device_id)
        agent = build_agent(self.agent_config(device_id, **fields), boot=sim)
        agent.resume()
        return agent, sim


def synthetic_image(path: Path, size: int) -> Path:
    """A deterministic stand-in for a ROM image: `size` bytes seeded by the file's name
    (random bytes do not compress). Written once; the same name gives the same bytes."""
    if path.exists() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(path.name)
    with path.open("wb") as f:
        for start in range(0, size, MIB):
            f.write(rng.randbytes(min(MIB, size - start)))
    return path


def synthetic_android_ota(path: Path, payload_size: int) -> Path:
    """A stand-in for an A/B OTA package as AOSP's ota_from_target_files makes it: a zip
    with `payload.bin` stored uncompressed (a `CrAU` header, then deterministic bytes) and
    its `payload_properties.txt`. Written once; the same name gives the same bytes."""
    if path.exists():
        return path
    header = b"CrAU" + (2).to_bytes(8, "big") + (16).to_bytes(8, "big") + bytes(4)
    body = random.Random(path.name).randbytes(max(payload_size - len(header), 1))
    payload = header + body
    properties = {
        "FILE_HASH": base64.b64encode(hashlib.sha256(payload).digest()).decode(),
        "FILE_SIZE": str(len(payload)),
        "METADATA_HASH": base64.b64encode(hashlib.sha256(header).digest()).decode(),
        "METADATA_SIZE": str(len(header)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as package:
        package.writestr("META-INF/com/android/metadata", "ota-type=AB\n")
        package.writestr("payload.bin", payload, compress_type=zipfile.ZIP_STORED)
        text = "".join(f"{key}={value}\n" for key, value in properties.items())
        package.writestr("payload_properties.txt", text)
    return path


def server_settings(workdir: Path, **overrides: Any) -> Settings:
    """The server of a lab in `workdir`: SQLite file, the repository under `workdir/repo`."""
    defaults: dict[str, Any] = {
        "db_url": f"sqlite:///{workdir / 'server.db'}",
        "repo_dir": workdir / "repo" / "repository",
        "admin_token": ADMIN_TOKEN,
        "enrollment_token": ENROLLMENT_TOKEN,
        "rate_limits": LAB_RATE_LIMITS,
    }
    return Settings(**{**defaults, **overrides})


@contextmanager
def running_backend(
    workdir: Path, board: Board | None = None, *, port: int | None = None, **settings: Any
) -> Iterator[Backend]:
    """Keys (made unless `workdir/repo` has them) and the real server on a free port (or
    `port`); `settings` override `server_settings`'s. Stops the server on exit."""
    repo = workdir / "repo"
    if not (repo / "root.json").exists():
        init_keys(repo)
    config = server_settings(workdir, **settings)
    with live_server(config, port) as url:
        backend = Backend(
            workdir,
            url,
            board or Board(),
            admin_token=config.admin_token,
            enrollment_token=config.enrollment_token,
            broker_url=without_login(config.broker_url or ""),
        )
        try:
            yield backend
        finally:
            backend.close()


@contextmanager
def daemons_running(daemons: Sequence[AgentDaemon]) -> Iterator[None]:
    """Each daemon's `run` in its own thread until the block ends; then all are stopped."""
    stop = threading.Event()
    threads = [threading.Thread(target=d.run, args=(stop,), daemon=True) for d in daemons]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for daemon in daemons:
            daemon.wake()
        for thread in threads:
            thread.join(timeout=DAEMON_STOP_TIMEOUT_S)
