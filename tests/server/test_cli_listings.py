"""`--json` on every listing of `ota` (issue 11): one JSON array of objects whose keys are the
API's (or the signed release's) fields, `[]` when there is nothing, over a real server (uvicorn
on a free port, SQLite) with nothing in it and with one of everything."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from agent.identity import DeviceKey
from agent.server_api import ServerApi
from lab.processes import live_server
from server.api_client import OtaApi
from server.api_models import (
    Device,
    DeviceAuditEntry,
    EnrollmentTokenInfo,
    Release,
    Role,
    RolloutStatus,
    TokenInfo,
    TrainStatus,
)
from server.cli import app as ota
from server.schemas import EnrollmentTokenIn, GatesIn, ReleaseIn, RolloutIn, TokenIn, TrainIn
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK, new_id, sample_release, sample_report
from signing.keys import init_keys
from signing.repo import PublishedRelease, publish_release
from signing.testing import write_image

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing

ADMIN = "admin-secret"
ENROLL = "enroll-secret"


@dataclass
class Fleet:
    url: str
    db_url: str
    repo: Path
    device_id: str


def _fleet(tmp: Path, seeded: bool) -> Iterator[Fleet]:
    db_url = f"sqlite:///{tmp / 'ota.db'}"
    repo = tmp / "repo"
    init_keys(repo)
    settings = Settings(db_url=db_url, admin_token=ADMIN, enrollment_token=ENROLL, rollout_tick_s=0)
    with live_server(settings) as url, OtaApi(url, ADMIN) as admin:
        device_id = new_id("phone")
        if seeded:
            _seed(url, admin, repo, tmp, device_id)
        yield Fleet(url, db_url, repo, device_id)


def _seed(url: str, admin: OtaApi, repo: Path, tmp: Path, device_id: str) -> None:
    device = ServerApi(url, device_id, DeviceKey.generate())
    device.enroll(ENROLL, "sim", "stable")
    device.send_reports([sample_report(device_id, 1)])
    admin.register_release(ReleaseIn.model_validate(sample_release("2026.48", 1)))
    lonely = ReleaseIn.model_validate(sample_release("2026.49", 2, model="x"))  # no devices
    staged = admin.register_release(lonely)
    gates = GatesIn(min_devices=0, min_soak_s=0)
    admin.create_rollout(RolloutIn(release_id=staged.id, gates=gates))
    admin.start_train(TrainIn(version="2026.48", model="sim", notes="weekly"))
    admin.create_enrollment_token(EnrollmentTokenIn(name="line-3", expires_in_s=3600))
    admin.create_token(TokenIn(role=Role.VIEWER, name="dashboard"))
    image = write_image(tmp / "rom.img", 4096)
    publish_release(repo, image, version="2026.48", channel="stable", model="sim")


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from _fleet(tmp_path_factory.mktemp("empty"), seeded=False)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from _fleet(tmp_path_factory.mktemp("seeded"), seeded=True)


def _model_keys(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


# each listing: its arguments for a fleet, and the keys every object in its array has
LISTINGS: dict[str, tuple[Callable[[Fleet], list[str]], set[str]]] = {
    "devices": (lambda f: ["devices"], _model_keys(Device)),
    "releases": (lambda f: ["releases"], _model_keys(Release)),
    "rollout status": (lambda f: ["rollout", "status"], _model_keys(RolloutStatus)),
    "train status": (lambda f: ["train", "status"], _model_keys(TrainStatus)),
    "enroll-token list": (lambda f: ["enroll-token", "list"], _model_keys(EnrollmentTokenInfo)),
    "device audit": (lambda f: ["device", "audit", f.device_id], _model_keys(DeviceAuditEntry)),
    "token list": (lambda f: ["token", "list", "--db-url", f.db_url], _model_keys(TokenInfo)),
    "release list": (
        lambda f: ["release", "list", "--repo", str(f.repo)],
        {field.name for field in fields(PublishedRelease)},
    ),
}


def _run(fleet: Fleet, args: list[str]) -> str:
    env = {"OTA_SERVER_URL": fleet.url, "OTA_TOKEN": ADMIN, "COLUMNS": "200"}
    result = CliRunner().invoke(ota, args, env=env)
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


@pytest.mark.parametrize("listing", LISTINGS)
def test_an_empty_listing_is_an_empty_array_and_one_line(empty: Fleet, listing: str) -> None:
    args, _ = LISTINGS[listing]
    assert json.loads(_run(empty, [*args(empty), "--json"])) == []
    (line,) = _run(empty, args(empty)).splitlines()  # "no devices match", "no tokens", ...
    assert line.startswith(("no ", "nothing "))


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_listing_is_an_array_of_objects_with_the_apis_keys(seeded: Fleet, listing: str) -> None:
    args, keys = LISTINGS[listing]
    listed = json.loads(_run(seeded, [*args(seeded), "--json"]))
    assert isinstance(listed, list)
    assert listed, f"{listing} lists nothing on a seeded server"
    assert all(set(item) == keys for item in listed), (keys, listed)
    lines = _run(seeded, args(seeded)).splitlines()
    assert len(lines) == len(listed)
