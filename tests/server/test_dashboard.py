"""The dashboard over HTTP (the browser suite is tests/e2e/test_dashboard_browser.py) and its
pure parts: the session cookie, CSRF and same-origin checks, the progress sweep, the views,
/metrics and the JSON access log."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.processes import live_server
from server.access_log import ACCESS_LOGGER
from server.api_client import OtaApi
from server.api_models import Device, RolloutStatus, TrainStatus
from server.json_logs import JsonFormatter
from server.schemas import ReleaseIn, RolloutIn, TokenIn
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK, dashboard_client, new_id, sample_release
from server.web.charts import bar_chart, line_chart
from server.web.cookie import Role, WebSession, seal, unseal
from server.web.progress import ReportPoint, WaveChange, progress_over_time
from server.web.views import find_problems, gate_rows, week_calendar
from wire import ENROLL_PATH, reports_path

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)

ADMIN = "admin-secret"
ENROLL = "enroll-secret"
KEY = b"k" * 32
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------------- the cookie


def test_a_session_cookie_round_trips_and_refuses_tampering_and_age() -> None:
    web = WebSession.start(Role.VIEWER, "wall", "d" * 64, now=1000.0)
    value = seal(web, KEY)
    assert unseal(value, KEY, now=1001.0) == web
    assert unseal(value, b"another key" * 3, now=1001.0) is None
    payload, _, mac = value.partition(".")
    forged = seal(WebSession.start(Role.ADMIN, "wall", "d" * 64, 1000.0), b"guess")
    assert unseal(forged.partition(".")[0] + "." + mac, KEY, now=1001.0) is None
    assert unseal(payload + "." + mac[:-2], KEY, now=1001.0) is None
    assert unseal(value, KEY, now=web.expires_at + 1) is None
    assert unseal("garbage", KEY, now=1001.0) is None
    assert web.csrf_matches(web.csrf)
    assert not web.csrf_matches("")


# ---------------------------------------------------------------------- pure views


def test_progress_counts_each_device_in_its_newest_state_at_each_moment() -> None:
    reports = [
        ReportPoint("a", T0 + timedelta(seconds=10), "downloading"),
        ReportPoint("a", T0 + timedelta(seconds=20), "committed"),
        ReportPoint("b", T0 + timedelta(seconds=30), "rolled_back"),
    ]
    waves = [WaveChange(T0, 10.0), WaveChange(T0 + timedelta(seconds=25), 100.0)]
    progress = progress_over_time(reports, waves, lambda p: int(p), T0 + timedelta(seconds=47))
    assert progress.times[0] == T0
    assert progress.times[-1] == T0 + timedelta(seconds=47)
    at = {t: i for i, t in enumerate(progress.times)}
    assert progress.series["notified"][0] == 10
    assert progress.series["notified"][-1] == 100
    assert progress.series["committed"][-1] == 1
    assert progress.series["rolled back"][-1] == 1
    assert progress.series["downloading"][-1] == 0  # a moved on
    assert progress.series["downloading"][at[T0 + timedelta(seconds=15)]] == 1


def _device(device_id: str, state: str, *, reason: str = "", silent: bool = False,
            seen: datetime = T0) -> Device:  # fmt: skip
    return Device(
        device_id=device_id, model="m", channel="stable", state=state, current_version="1",
        target_version="2", slot="a", reason=reason, last_seq=1, enrolled_at=seen,
        last_seen=seen, last_report_at=seen, silent=silent,
    )  # fmt: skip


def test_problems_sort_stuck_failing_offline_and_stale_devices() -> None:
    devices = [
        _device("ok", "committed"),
        _device("stuck", "downloading", seen=T0 - timedelta(hours=2)),
        _device("busy", "downloading", seen=T0),
        _device("bad", "rolled_back", reason="health_check"),
        _device("gone", "committed", silent=True),
        _device("stale", "failed", reason="metadata"),
    ]
    found = find_problems(devices, T0, stuck_after_s=1800)
    names = {key: [d.device_id for d in group] for key, _, group in found.sections()}
    assert names == {"stuck": ["stuck"], "failing": ["bad", "stale"], "offline": ["gone"],
                     "stale": ["stale"]}  # fmt: skip


def _rollout(**numbers: float) -> RolloutStatus:
    base = {"success": 8, "rolled_back": 2, "failed": 0, "in_progress": 0, "finished": 10,
            "expected": 10, "success_rate": 0.8, "rollback_rate": 0.2, "soaked_s": 60,
            "blocking_issues": 0, "verdict": "fail", "gate": "success_rate"}  # fmt: skip
    return RolloutStatus.model_validate(
        {
            "rollout_id": "r",
            "release_id": 1,
            "version": "2",
            "channel": "stable",
            "model": "m",
            "state": "paused",
            "waves": [10, 100],
            "wave_index": 0,
            "waves_reached": [10],
            "percentage": 10,
            "paused": True,
            "paused_reason": "success_rate = 0.8",
            "paused_gate": "success_rate",
            "gates": {},
            "numbers": {**base, **numbers},
            "windows": [],
            "rate_per_minute": 0,
            "stuck_timeout_s": 1800,
            "wave_started_at": T0,
            "audit": [],
        }
    )


def test_each_gate_is_shown_against_its_threshold_and_the_one_that_paused() -> None:
    rows = {row.gate: row for row in gate_rows(_rollout())}
    assert not rows["success_rate"].passes
    assert rows["success_rate"].holding
    assert rows["success_rate"].threshold == 0.95
    assert not rows["rollback_rate"].passes  # 0.2 > 0.02
    assert rows["blocking_issues"].passes
    assert not rows["min_soak_s"].passes  # 60 s of 3600


def test_the_calendar_places_each_stage_on_its_day() -> None:
    train = TrainStatus.model_validate(
        {
            "version": "2026.48",
            "model": "m",
            "week_of": date(2026, 11, 23),
            "stage": "internal",
            "notes": "",
            "rings": {},
            "due": {
                "announced": datetime(2026, 11, 25, 10, tzinfo=UTC),
                "internal": datetime(2026, 11, 26, 10, tzinfo=UTC),
                "preview": datetime(2026, 11, 27, 9, tzinfo=UTC),
                "stable": datetime(2026, 11, 27, 12, tzinfo=UTC),
            },
        }
    )
    days = week_calendar([train], date(2026, 11, 27))
    assert [d.day.weekday() for d in days] == list(range(7))
    friday = days[4]
    assert friday.today
    assert [(e.stage, e.reached) for e in friday.events] == [("preview", False), ("stable", False)]
    assert [(e.stage, e.reached) for e in days[3].events] == [("internal", True)]


def test_charts_scale_to_the_largest_value() -> None:
    bars = bar_chart("by version", {"1": 5, "2": 10, "": 0})
    assert [(b.label, b.value) for b in bars.bars] == [("2", 10), ("1", 5), ("(none)", 0)]
    assert bars.bars[1].width == bars.bars[0].width / 2
    lines = line_chart("x", [T0, T0 + timedelta(minutes=1)], {"a": [0, 4]}, [(T0, "10 %")])
    assert lines.lines[0].last == 4
    assert lines.y_ticks[-1].label == "4"


# ---------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = f"sqlite:///{tmp_path_factory.mktemp('db') / 'ota.db'}"
    settings = Settings(db_url=db, admin_token=ADMIN, enrollment_token=ENROLL, rollout_tick_s=0)
    with live_server(settings) as base:
        yield base


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found[1]


def _staged_rollout(url: str) -> str:
    held = {**sample_release("9", 9, new_id("ch")), "percentage": 0}
    with OtaApi(url, ADMIN) as api:
        release = api.register_release(ReleaseIn.model_validate(held))
        return api.create_rollout(RolloutIn(release_id=release.id, waves=[10, 50, 100])).rollout_id


def test_a_button_acts_only_with_the_sessions_csrf_token_from_this_site(url: str) -> None:
    rollout_id = _staged_rollout(url)
    action = f"/rollouts/{rollout_id}/actions/advance"
    with dashboard_client(url, ADMIN) as web:
        csrf = csrf_of(web.get(f"/rollouts/{rollout_id}/confirm/advance").text)
        assert web.post(action, data={"reason": "x"}).status_code == 403
        assert web.post(action, data={"csrf": "forged", "reason": "x"}).status_code == 403
        foreign = {"Origin": "https://evil.example"}
        assert web.post(action, data={"csrf": csrf}, headers=foreign).status_code == 403
        moved = web.post(action, data={"csrf": csrf, "reason": "hotfix"})
        assert moved.status_code == 303
    with OtaApi(url, ADMIN) as api:
        status = api.rollout(rollout_id)
    assert status.percentage == 50
    last = status.audit[-1]
    assert (last.action, last.actor, last.reason) == ("advance", "admin:admin", "hotfix")


def test_a_viewer_reads_but_cannot_act_and_revoking_the_token_ends_the_session(url: str) -> None:
    name = new_id("wall")
    with OtaApi(url, ADMIN) as api:
        token = api.create_token(TokenIn(role=Role.VIEWER, name=name)).token
    rollout_id = _staged_rollout(url)
    with dashboard_client(url, token) as web:
        page = web.get(f"/rollouts/{rollout_id}")
        assert page.status_code == 200
        assert "Pause…" not in page.text
        assert web.get(f"/rollouts/{rollout_id}/confirm/pause").status_code == 403
        live = web.get(f"/rollouts/{rollout_id}", headers={"Accept": "application/json"})
        assert set(live.json()) >= {"live_status", "live_chart", "live_gates", "live_audit"}
        with OtaApi(url, ADMIN) as api:
            assert api.revoke_token(name).revoked
        assert web.get("/fleet").status_code == 303


def samples(text: str, name: str) -> list[dict[str, str]]:
    """Each sample of metric `name` as its labels plus "value"."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found.append({**sample.labels, "value": str(sample.value)})
    return found


def test_metrics_count_by_route_template_and_group_the_fleet(url: str) -> None:
    phone = new_id("phone")
    body = {"enrollment_token": ENROLL, "device_id": phone, "model": "sim", "channel": "stable"}
    credential = httpx.post(f"{url}{ENROLL_PATH}", json=body).json()["credential"]
    device = {"Authorization": f"Bearer {credential}"}
    bad = httpx.post(f"{url}{reports_path(phone)}", json=[{"v": 999}], headers=device)
    assert bad.status_code == 422
    assert httpx.get(f"{url}/metrics").status_code == 401
    text = httpx.get(f"{url}/metrics", headers=admin()).text
    fleet = samples(text, "ota_devices")
    assert {"state": "", "version": "", "channel": "stable", "model": "sim"} in [
        {k: v for k, v in s.items() if k != "value"} for s in fleet
    ]
    routes = {s["route"] for s in samples(text, "ota_http_request_duration_seconds_count")}
    assert "/api/v1/devices/{device_id}/reports" in routes
    assert phone not in text  # no label per device
    refused = samples(text, "ota_reports_refused_total")
    assert any(s["via"] == "http" and s["reason"] == "invalid" for s in refused)


def test_the_access_log_is_json_with_the_request_id_and_never_the_query(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    httpx.get(f"{url}/api/v1/devices/phone-x/poll?token=SECRET-IN-URL",
              headers={"X-Request-ID": "req-42"})  # fmt: skip
    deadline = time.monotonic() + 5  # the server's thread logs after the answer has gone
    records: list[logging.LogRecord] = []
    while not records and time.monotonic() < deadline:
        records = [
            r for r in caplog.records if r.name == ACCESS_LOGGER and "poll" in r.getMessage()
        ]
        time.sleep(0.02)
    assert records
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["route"] == "/api/v1/devices/{device_id}/poll"
    assert line["status"] == 401
    assert (line["request_id"], line["device_id"]) == ("req-42", "phone-x")
    assert "SECRET" not in json.dumps(line)


def test_the_grafana_example_uses_only_metrics_the_server_exposes(url: str) -> None:
    from pathlib import Path

    board = json.loads(Path("docs/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bota_[a-z_]+", e)}
    text = httpx.get(f"{url}/metrics", headers=admin()).text
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    declared = set(re.findall(r"^# TYPE (ota_[a-z_]+)", text, flags=re.MULTILINE))
    known = (
        exposed
        | declared
        | {f"{n}_total" for n in declared}
        | {f"{n}_{suffix}" for n in declared for suffix in ("bucket", "count", "sum")}
    )
    assert used
    assert used <= known, used - known
