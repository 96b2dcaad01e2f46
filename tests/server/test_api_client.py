"""`server.api_client.OtaApi` against the real server (uvicorn on a free port): every method
parses the answer of its route into the route's model, and every refusal is one `ApiError`
with the HTTP status and the server's message."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agent.identity import DeviceKey
from agent.server_api import ServerApi
from lab.net import free_port
from lab.processes import live_server
from lab.resetting import resetting_server
from server.api_client import ApiError, OtaApi
from server.api_models import GateNumbers, Role
from server.schemas import (
    BlockingBody,
    CommandIn,
    FCodeIssue,
    FeedbackBody,
    GatesIn,
    ReleaseIn,
    RolloutIn,
    RolloutUpdate,
    TokenIn,
    TrainAdvanceIn,
    TrainIn,
)
from server.services.rollout_rules import RolloutState
from server.services.train_rules import Stage
from server.settings import Settings
from server.testing import new_id, sample_release, sample_report
from wire import CommandKind, UpdateState

ADMIN = "admin-secret"
ENROLL = "enroll-secret"


@dataclass
class Server:
    url: str
    admin: OtaApi

    def as_(self, token: str) -> OtaApi:
        return OtaApi(self.url, token)

    def enrolled(self) -> tuple[str, ServerApi]:
        """A device that enrolled on stable, speaking through the device's own client."""
        device_id = new_id("phone")
        device = ServerApi(self.url, device_id, DeviceKey.generate())
        device.enroll(ENROLL, "sim", "stable")
        return device_id, device

    def release(self, counter: int = 1, model: str = "sim") -> ReleaseIn:
        return ReleaseIn.model_validate(sample_release(new_id("v"), counter, "stable", model))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("db") / "ota.db"
    settings = Settings(
        db_url=f"sqlite:///{db}", admin_token=ADMIN, enrollment_token=ENROLL, rollout_tick_s=0
    )
    with live_server(settings) as url, OtaApi(url, ADMIN) as admin:
        yield Server(url, admin)


def test_releases_devices_reports_and_commands(server: Server) -> None:
    body = server.release()
    release = server.admin.register_release(body)
    assert (release.version, release.percentage, release.paused) == (body.version, 100.0, False)
    assert release.published_at == body.published_at
    assert release in server.admin.releases()
    assert release.rollout_id is not None
    narrowed = server.admin.update_rollout(release.rollout_id, RolloutUpdate(percentage=5.0))
    assert (narrowed.id, narrowed.percentage, narrowed.paused) == (release.id, 5.0, False)

    device_id, device = server.enrolled()
    assert device.send_reports([sample_report(device_id, 1)]) == {1}
    (row,) = [d for d in server.admin.devices() if d.device_id == device_id]
    assert (row.state, row.last_seq, row.silent) == (UpdateState.DOWNLOADING.value, 1, False)
    (report,) = server.admin.reports(device_id=device_id, limit=5)
    assert (report.seq, report.via, report.current_version) == (1, "http", "2026.46")

    queued = server.admin.send_command(device_id, CommandIn(kind=CommandKind.CHECK_NOW))
    assert (queued.device_id, queued.kind) == (device_id, CommandKind.CHECK_NOW)


def test_a_staged_rollout_is_created_evaluated_paused_resumed_and_aborted(server: Server) -> None:
    lonely = new_id("model")  # no device has it: the gates count nobody
    release = server.admin.register_release(server.release(counter=2, model=lonely))
    gates = GatesIn(min_devices=0, min_soak_s=0)
    made = server.admin.create_rollout(RolloutIn(release_id=release.id, gates=gates))
    assert (made.state, made.wave_index, made.numbers) == (RolloutState.ACTIVE, 0, None)
    assert made.gates.min_devices == 0
    assert [a.action for a in made.audit] == ["create"]

    evaluated = [r for r in server.admin.evaluate_rollouts() if r.rollout_id == made.rollout_id]
    assert isinstance(evaluated[0].numbers, GateNumbers)
    assert evaluated[0].numbers.expected == 0
    assert made.rollout_id in [r.rollout_id for r in server.admin.rollouts()]

    paused = server.admin.change_rollout(made.rollout_id, "pause", "looks odd")
    assert (paused.state, paused.paused, paused.paused_reason) == ("paused", True, "looks odd")
    resumed = server.admin.change_rollout(made.rollout_id, "resume")
    assert (resumed.state, resumed.paused) == (RolloutState.ACTIVE, False)
    aborted = server.admin.change_rollout(made.rollout_id, "abort", "bad build")
    assert (aborted.state, aborted.percentage) == (RolloutState.ABORTED, 0.0)
    assert server.admin.rollout(made.rollout_id) == aborted


def test_the_train_starts_advances_and_announces(server: Server) -> None:
    version = new_id("train")
    started = server.admin.start_train(TrainIn(version=version, model="sim", notes="weekly"))
    assert (started.stage, started.notes) == (Stage.NEW, "weekly")
    assert set(started.due) == {"announced", "internal", "preview", "stable"}
    moved = server.admin.advance_train(TrainAdvanceIn(version=version, model="sim", force=True))
    assert (moved.moved_to, moved.train.stage) == ("announced", Stage.ANNOUNCED)
    assert version in [t.version for t in server.admin.trains()]
    (told,) = [a for a in server.admin.announcements() if a.version == version]
    assert told.preview_at == moved.train.due["preview"]


def test_testers_redeem_send_feedback_vote_and_the_group_blocks(server: Server) -> None:
    (code,) = server.admin.issue_fcodes(FCodeIssue(count=1, expires_in_s=3600)).codes
    device_id, device = server.enrolled()
    with server.as_(device.access_token()) as as_device:
        joined = as_device.redeem(device_id, code)
        assert (joined.channel, joined.previous_channel) == ("preview", "stable")
        build = new_id("build")
        sent = as_device.send_feedback(FeedbackBody(text="GPS never locks", build=build))
    with server.as_(joined.tester_token) as tester:
        assert tester.vote(sent.group_id).votes == 1
        (group,) = tester.surfacing(build).groups
    assert (group.group_id, group.rank, group.votes, group.reports) == (sent.group_id, 1, 1, 1)
    mark = BlockingBody(blocking=True, reason="no navigation")
    assert server.admin.mark_blocking(sent.group_id, mark).blocking is True
    assert server.admin.close_group(sent.group_id).closed is True
    with server.as_(device.access_token()) as as_device:
        left = as_device.leave_preview(device_id)
    assert (left.channel, left.previous_channel) == ("stable", "preview")


def test_tokens_are_issued_listed_and_revoked(server: Server) -> None:
    name = new_id("viewer")
    issued = server.admin.create_token(TokenIn(role=Role.VIEWER, name=name))
    assert (issued.name, issued.role) == (name, Role.VIEWER)
    with server.as_(issued.token) as viewer:
        assert isinstance(viewer.releases(), list)
    (listed,) = [t for t in server.admin.tokens() if t.name == name]
    assert (listed.role, listed.revoked_at) == (Role.VIEWER, None)
    assert server.admin.revoke_token(name).revoked is True


# ---------------------------------------------------------------------- errors


def _refusal(call: object) -> ApiError:
    assert callable(call)
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def test_refusals_carry_the_status_and_the_servers_message(server: Server) -> None:
    with server.as_("not-a-token") as stranger:
        unknown = _refusal(stranger.releases)
    assert (unknown.status, unknown.method) == (401, "GET")
    assert "missing or unknown token" in unknown.message
    missing = _refusal(lambda: server.admin.rollout("nosuch"))
    assert (missing.status, missing.message) == (404, "no rollout 'nosuch'")
    assert "HTTP 404: no rollout 'nosuch'" in str(missing)
    body = server.release(counter=3)
    server.admin.register_release(body)
    again = _refusal(lambda: server.admin.register_release(body))
    assert again.status == 409
    assert again.message == f"release {body.version} for stable/sim exists already"


def test_a_refused_body_names_the_field(server: Server) -> None:
    bad = RolloutIn.model_construct(release_id=1, waves=[], rate_per_minute=-1.0)
    refused = _refusal(lambda: server.admin.create_rollout(bad))
    assert refused.status == 422
    assert "rate_per_minute" in refused.message


def test_a_server_that_is_not_there_is_an_error_without_status() -> None:
    with OtaApi(f"http://127.0.0.1:{free_port()}", ADMIN, timeout=2) as nobody:
        unreachable = _refusal(nobody.devices)
    assert unreachable.status is None
    assert str(unreachable).startswith("cannot reach http://127.0.0.1:")


def test_a_get_whose_kept_alive_connection_was_reset_is_sent_again_a_post_is_not() -> None:
    with resetting_server({"GET": b"[]", "POST": b"{}"}) as server:
        with OtaApi(server.url, ADMIN) as api:
            assert api.devices() == []
            assert api.devices() == []  # its connection reset under it: asked again
        assert [n for n, _ in server.requests] == [1, 1, 2]
    with resetting_server({"GET": b"[]", "POST": b"{}"}) as server:
        with OtaApi(server.url, ADMIN) as api:
            assert api.devices() == []
            release = ReleaseIn.model_validate(sample_release("9.9", 1))
            refused = _refusal(lambda: api.register_release(release))
        assert refused.status is None  # no answer
        assert len(server.requests) == 2  # the release went out once
