"""The dashboard in a real browser: Playwright driving Debian's headless Chromium against the
real server with simulated devices running the real agent (lab/fleet.py).

Sign in, watch a wave advance without reloading, pause and resume a rollout (each confirmed),
join the beta with an F-code, file feedback, vote and see the ranking change. Every page is
saved as a screenshot under test-artifacts/screens/ (`make test` names the folder).
With CI=true a missing browser fails the run instead of skipping it."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.runner import Agent
from hardware.sim import SimDevice
from lab.fleet import KIB, Backend, Board, running_backend
from server.api_client import OtaApi
from server.api_models import Role
from server.schemas import FCodeIssue, FeedbackBody, GatesIn, RolloutIn, TokenIn, TrainIn

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("OTA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENS = Path("test-artifacts/screens")
BOARD = Board(model="board", slot_size=256 * KIB, image_size=96 * KIB, chunk_size=32 * KIB)
FLEET = 6
LIVE_WAIT_MS = 15_000
BUILD = "2026.11"


def _no_browser(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {why}: .ci/run installs chromium")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _no_browser(f"no chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dev install has it
        _no_browser("playwright is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class World:
    backend: Backend
    agents: dict[str, tuple[Agent, SimDevice]]
    engineer_token: str
    staged_id: str  # stable, waves 34 -> 100, gates that pass at once
    held_id: str  # internal, a long soak: stays in its first wave
    codes: list[str]
    testers: dict[str, str]  # device id -> device credential, not yet joined

    @property
    def admin(self) -> OtaApi:
        return self.backend.admin

    def poll_all(self) -> None:
        for agent, _ in self.agents.values():
            agent.poll_once()


def _staged(backend: Backend, version: str, channel: str, waves: list[float], soak: float) -> str:
    release = backend.register(backend.sign(version, channel=channel), percentage=0)
    gates = GatesIn(min_success_rate=0.5, max_rollback_rate=0.5, min_devices=1, min_soak_s=soak)
    body = RolloutIn(release_id=release.id, waves=waves, gates=gates)
    return backend.admin.create_rollout(body).rollout_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("dashboard")
    with running_backend(workdir, BOARD, rollout_tick_s=0) as backend:
        agents = {
            f"phone-{n:02d}": backend.start_agent(f"phone-{n:02d}", health_deadline_s=2.0)
            for n in range(FLEET)
        }
        backend.publish("2026.10")  # everyone gets last week's build
        for agent, _ in agents.values():
            agent.poll_once()
        engineer = backend.admin.create_token(TokenIn(role=Role.RELEASE_ENGINEER, name="erin"))
        codes = backend.admin.issue_fcodes(FCodeIssue(count=2, expires_in_s=86400)).codes
        testers = {f"tester-{n}": backend.enroll(f"tester-{n}") for n in (1, 2)}
        backend.admin.start_train(TrainIn(version="2026.12", model=BOARD.model))
        yield World(
            backend,
            agents,
            engineer.token,
            _staged(backend, BUILD, "stable", [34.0, 100.0], 0.0),
            _staged(backend, BUILD, "internal", [50.0, 100.0], 3600.0),
            list(codes),
            testers,
        )


@pytest.fixture(scope="module", autouse=True)
def screens() -> Path:
    shutil.rmtree(SCREENS, ignore_errors=True)
    SCREENS.mkdir(parents=True)
    return SCREENS


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)


def sign_in(browser: Any, world: World, token: str, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    page.goto(world.backend.server_url + "/fleet")
    assert "/signin" in page.url
    page.get_by_label("Token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/(fleet|testers)$"))
    return page


# ---------------------------------------------------------------------- release engineers


def test_sign_in_and_see_the_fleet(browser: Any, world: World) -> None:
    page = sign_in(browser, world, world.engineer_token)
    assert page.url.endswith("/fleet")
    assert page.get_by_role("heading", name=f"{FLEET + 2} devices").is_visible()
    assert page.locator("svg title", has_text="Devices by version").count() == 1
    assert page.get_by_role("row").filter(has_text="phone-03").is_visible()
    shot(page, "fleet")
    page.get_by_role("link", name="phone-03").first.click()
    assert page.get_by_role("heading", name="Device phone-03").is_visible()
    assert "2026.10" in page.locator("dl.facts").inner_text()
    shot(page, "device")
    page.goto(world.backend.server_url + "/train")
    assert page.get_by_role("cell", name="2026.12").is_visible() or "2026.12" in page.content()
    shot(page, "train")
    cookie = next(c for c in page.context.cookies() if c["name"] == "ota_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"


def test_a_wave_advances_while_the_page_is_open(browser: Any, world: World) -> None:
    from playwright.sync_api import expect

    page = sign_in(browser, world, world.engineer_token)
    page.goto(f"{world.backend.server_url}/rollouts/{world.staged_id}")
    percentage = page.locator("#rollout-percentage")
    assert percentage.inner_text() == "34 %"
    page.evaluate("window.stillTheSamePage = true")
    world.poll_all()  # the devices in the first wave install and commit
    world.admin.evaluate_rollouts()  # what the scheduler does on its tick
    expect(percentage).to_have_text("100 %", timeout=LIVE_WAIT_MS)  # the live script's doing
    assert page.evaluate("window.stillTheSamePage") is True  # no reload
    assert page.locator("#live_audit").get_by_text("advance").first.is_visible()
    shot(page, "rollout-advanced")


def test_pause_and_resume_with_confirmation(browser: Any, world: World) -> None:
    page = sign_in(browser, world, world.engineer_token)
    page.goto(f"{world.backend.server_url}/rollouts/{world.held_id}")
    assert page.locator("#rollout-state").inner_text() == "active"
    page.get_by_role("link", name="Pause…").click()
    assert page.get_by_role("heading", name=re.compile("^Pause the rollout")).is_visible()
    page.get_by_label("Reason").fill("camera reports from internal")
    shot(page, "confirm-pause")
    page.get_by_role("button", name="Yes, pause").click()
    assert page.locator("#rollout-state").inner_text() == "paused"
    assert "camera reports from internal" in page.locator("#paused-why").inner_text()
    shot(page, "rollout-paused")
    page.get_by_role("link", name="Resume…").click()
    page.get_by_role("button", name="Yes, resume").click()
    assert page.locator("#rollout-state").inner_text() == "active"
    audit = world.admin.rollout(world.held_id).audit
    assert [(a.action, a.actor) for a in audit[-2:]] == [
        ("pause", "release_engineer:erin"),
        ("resume", "release_engineer:erin"),
    ]


# ---------------------------------------------------------------------- testers


def test_a_tester_joins_files_feedback_and_votes(browser: Any, world: World) -> None:
    (first, first_credential), (second, second_credential) = world.testers.items()
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True}
    page = browser.new_context(**phone).new_page()
    page.goto(world.backend.server_url + "/signin")
    page.get_by_label("Device id").fill(first)
    page.get_by_label("Device credential").fill(first_credential)
    page.get_by_label("Invite code (F-code)").fill(world.codes[0])
    page.get_by_role("button", name="Redeem and join").click()
    assert page.get_by_role("heading", name="Welcome to the beta").is_visible()
    assert page.locator("#tester-token").inner_text()
    shot(page, "joined")

    other = _redeem_as_device(world, second, second_credential, world.codes[1])
    _feedback_as(world, other, "Battery drains much faster overnight", "battery")

    page.get_by_role("link", name="Go to the testers' board").click()
    page.get_by_label("What happened").fill("Camera app crashes when opening the front camera")
    page.get_by_label("Category (optional)").fill("camera")
    page.get_by_label("Log excerpt (optional)").fill("E/camera: CameraService died (pid 812)")
    page.get_by_role("button", name="Send feedback").click()
    titles = page.locator(".board .title")
    assert titles.first.inner_text().startswith("Camera app crashes")  # newest first
    shot(page, "board-before-vote")
    page.get_by_role("button", name=re.compile("^Vote for: Battery")).click()
    assert titles.first.inner_text().startswith("Battery drains")  # the vote moved it up
    assert page.locator(".board .group").first.locator(".votes").inner_text() == "1"
    shot(page, "board-after-vote")


def _redeem_as_device(world: World, device_id: str, credential: str, code: str) -> str:
    with OtaApi(world.backend.server_url, credential) as device:
        return device.redeem(device_id, code).tester_token


def _feedback_as(world: World, tester_token: str, text: str, category: str) -> None:
    with OtaApi(world.backend.server_url, tester_token) as tester:
        tester.send_feedback(FeedbackBody(text=text, build=BUILD, category=category))


def test_a_release_engineer_marks_a_group_blocking(browser: Any, world: World) -> None:
    page = sign_in(browser, world, world.engineer_token)
    page.goto(f"{world.backend.server_url}/testers?build={BUILD}")
    group = page.locator(".board .group").filter(has_text="Camera app crashes")
    group.get_by_label("Reason").fill("crash on open, every device")
    group.get_by_role("button", name=re.compile("^Mark blocking")).click()
    blocked = page.locator(".board .group.blocking")
    assert blocked.count() == 1
    assert "Camera app crashes" in blocked.inner_text()
    shot(page, "board-blocking")


def test_pages_read_without_javascript(browser: Any, world: World) -> None:
    page = sign_in(browser, world, world.engineer_token, java_script_enabled=False)
    assert page.url.endswith("/fleet")
    assert page.get_by_role("row").filter(has_text="phone-00").is_visible()
    page.goto(f"{world.backend.server_url}/rollouts/{world.staged_id}")
    assert page.locator("#rollout-percentage").inner_text() == "100 %"
    page.goto(world.backend.server_url + "/rollouts")
    shot(page, "rollouts")
