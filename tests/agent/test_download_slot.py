"""download_into with the simulated device's real slot, power cuts included."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.download import download_into
from agent.errors import InstallError
from agent.fetcher import make_fetcher
from agent.tuf_client import TargetInfo, TufClient
from hardware.bootcontrol import Slot
from hardware.sim import FaultPlan, PowerCut, SimDevice
from lab.tufrepo import RepoServer, TufRepo, chunked_rom, device_client, serve
from wire import FailureReason

CHUNK = 32 * 1024
DATA = random.Random(11).randbytes(20 * CHUNK + 999)
ROM = "sim/stable/2/rom.img"


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    repo = TufRepo(tmp_path / "repo")
    repo.add_target(ROM, DATA, chunked_rom(DATA, CHUNK, version="2", model="sim"))
    repo.publish()
    return repo


@pytest.fixture
def server(repo: TufRepo) -> Iterator[RepoServer]:
    yield from serve(repo.base)


@pytest.fixture
def client(tmp_path: Path, repo: TufRepo, server: RepoServer) -> TufClient:
    return device_client(tmp_path / "tuf", repo, server)


def device(root: Path, slot_size: int = 1024 * 1024) -> SimDevice:
    dev = SimDevice.provision(root, slot_size=slot_size)
    dev.mark_unbootable(Slot.B)
    return dev


def write_slot(dev: SimDevice, client: TufClient, info: TargetInfo, resume_from: int = 0) -> None:
    with dev.open_slot(Slot.B) as sink:
        download_into(make_fetcher(), client.target_url(info), info, sink, resume_from=resume_from)


def test_download_into_the_simulated_slot(tmp_path: Path, client: TufClient) -> None:
    dev = device(tmp_path / "dev")
    info = client.get_target(ROM)
    write_slot(dev, client, info)
    assert dev.slot_path(Slot.B).read_bytes()[: len(DATA)] == DATA
    assert dev.faults.steps[-1] == "slot.fsync"  # synced through the slot, last


@pytest.mark.parametrize("cut_at", [0, 3, 6])
def test_power_cut_mid_write_then_resume_from_the_first_bad_chunk(
    tmp_path: Path, client: TufClient, server: RepoServer, cut_at: int
) -> None:
    dev = device(tmp_path / "dev")
    info = client.get_target(ROM)
    dev.faults = FaultPlan(cut_at=cut_at, tear=True)
    with pytest.raises(PowerCut):
        write_slot(dev, client, info)
    assert dev.faults.cut is not None
    assert dev.faults.cut.step == "slot.write"
    held = dev.slot_path(Slot.B).read_bytes()
    first_bad = next(
        i for i in range(0, len(DATA), CHUNK) if held[i : i + CHUNK] != DATA[i : i + CHUNK]
    )

    rebooted = SimDevice(tmp_path / "dev")
    write_slot(rebooted, client, info, resume_from=len(DATA))  # claim it all: the hashes judge
    assert rebooted.slot_path(Slot.B).read_bytes()[: len(DATA)] == DATA
    last_range = [r for p, r in server.faults.requests if p.startswith("/targets/")][-1]
    assert last_range == (f"bytes={first_bad}-" if first_bad else "")


def test_an_image_larger_than_the_slot_is_disk_full(tmp_path: Path, client: TufClient) -> None:
    dev = device(tmp_path / "dev", slot_size=len(DATA) - 10)
    info = client.get_target(ROM)
    with pytest.raises(InstallError) as caught:
        write_slot(dev, client, info)
    assert caught.value.reason is FailureReason.DISK_FULL
