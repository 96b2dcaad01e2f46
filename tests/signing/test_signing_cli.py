"""`ota keys init` and `ota release publish/list/notify` through typer's CliRunner."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from lab.net import free_port
from signing.cli import keys_app, release_app
from signing.repo import list_releases
from signing.testing import snapshot_tree, write_image

PASS_ENV = {"OTA_KEY_PASSPHRASE": "pw"}


def _app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(keys_app, name="keys")
    app.add_typer(release_app, name="release")
    return app


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(_app(), list(args), env=env or PASS_ENV)


def _assert_clean_failure(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ota: error: ")
    assert message in lines[0]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    result = _run(
        "keys",
        "init",
        "--repo",
        str(tmp_path / "repo"),
        "--root-keys",
        "2",
        "--root-threshold",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert "provision devices with" in result.stdout
    return tmp_path / "repo"


def _publish_args(repo: Path, image: Path, version: str, *extra: str) -> list[str]:
    return [
        "release",
        "publish",
        str(image),
        "--repo",
        str(repo),
        "--version",
        version,
        "--channel",
        "stable",
        "--model",
        "rpi4",
        "--new-channel",  # the fixture's repository has no channel yet
        *extra,
    ]


def test_init_then_publish_then_list(repo: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in (repo / "keys").iterdir()) == [
        "root-1.pem",
        "root-2.pem",
        "snapshot.pem",
        "targets.pem",
        "timestamp.pem",
    ]
    notes = tmp_path / "notes.md"
    notes.write_text("Camera fixes\n")
    image = write_image(tmp_path / "rom.img", 50_000)
    args = _publish_args(
        repo,
        image,
        "2026.48",
        "--notes",
        str(notes),
        "--hardware-id",
        "rpi4",
        "--hardware-id",
        "cm4",
        "--json",
    )
    result = _run(*args)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["version"] == "2026.48"
    assert shown["notes"] == "Camera fixes\n"
    assert [r.to_dict() for r in list_releases(repo)] == [shown]
    listed = _run("release", "list", "--repo", str(repo))
    assert "rpi4/stable 2026.48 (release #1)" in listed.stdout


def test_init_twice_is_a_clear_error(repo: Path) -> None:
    _assert_clean_failure(_run("keys", "init", "--repo", str(repo)), "refusing to create new keys")


def test_encrypted_keys_need_the_passphrase(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 1000)
    result = _run(*_publish_args(repo, image, "1.0"), env={"OTA_KEY_PASSPHRASE": ""})
    _assert_clean_failure(result, "is encrypted: set OTA_KEY_PASSPHRASE")


@pytest.mark.parametrize(
    ("version", "image_name", "message"),
    [
        ("2026.49", "missing.img", "image not found"),
        ("not a version!", "rom.img", "invalid version"),
        ("2026.47", "rom.img", "not newer than 2026.48"),
        ("2026.48", "rom.img", "not newer than 2026.48"),
    ],
)
def test_bad_publish_input_fails_cleanly_and_changes_nothing(
    repo: Path, tmp_path: Path, version: str, image_name: str, message: str
) -> None:
    image = write_image(tmp_path / "rom.img", 1000)
    assert _run(*_publish_args(repo, image, "2026.48")).exit_code == 0
    before = snapshot_tree(repo)
    result = _run(*_publish_args(repo, tmp_path / image_name, version))
    _assert_clean_failure(result, message)
    assert snapshot_tree(repo) == before


def test_missing_notes_file_fails_cleanly(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 1000)
    result = _run(*_publish_args(repo, image, "1.0", "--notes", str(tmp_path / "nope.md")))
    _assert_clean_failure(result, "cannot read release notes")


def test_usage_errors_exit_2(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 1000)
    assert _run("release", "publish", str(image), "--repo", str(repo)).exit_code == 2
    result = _run(*_publish_args(repo, image, "1.0", "--server", "http://127.0.0.1:1"))
    assert result.exit_code == 2
    assert "--token" in result.output


# --------------------------------------------------------------------------- --server


class _Recorder(http.server.BaseHTTPRequestHandler):
    status = 201
    whoami_status = 200  # what GET /api/v1/whoami answers: publish asks it before signing
    received: list[tuple[str, dict[str, str], Any]] = []

    def do_GET(self) -> None:
        self._answer(self.whoami_status, {"role": "release_engineer", "subject": "t0k"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, dict(self.headers), body))
        self._answer(self.status, {"rollout_id": "r1"})

    def _answer(self, status: int, data: dict[str, str]) -> None:
        answer = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def api_server() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"received": [], "status": 201, "whoami_status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_publish_notifies_the_server(
    repo: Path, tmp_path: Path, api_server: tuple[str, type[_Recorder]]
) -> None:
    url, handler = api_server
    image = write_image(tmp_path / "rom.img", 1000)
    result = _run(*_publish_args(repo, image, "1.0", "--server", url, "--token", "t0k", "--json"))
    assert result.exit_code == 0, result.output
    ((path, headers, body),) = handler.received
    assert path == "/api/v1/releases"
    assert headers["Authorization"] == "Bearer t0k"
    assert body == json.loads(result.stdout) == list_releases(repo)[0].to_dict()


def test_failed_notify_exits_1_but_the_release_stays_published(
    repo: Path, tmp_path: Path, api_server: tuple[str, type[_Recorder]]
) -> None:
    url, handler = api_server
    handler.status = 503
    image = write_image(tmp_path / "rom.img", 1000)
    result = _run(*_publish_args(repo, image, "1.0", "--server", url, "--token", "t0k"))
    _assert_clean_failure(result, "IS published and signed")
    assert "HTTP 503" in result.stderr
    assert [r.version for r in list_releases(repo)] == ["1.0"]

    handler.status = 201
    again = _run(
        "release",
        "notify",
        "--repo",
        str(repo),
        "--version",
        "1.0",
        "--channel",
        "stable",
        "--model",
        "rpi4",
        "--server",
        url,
        "--token",
        "t0k",
    )
    assert again.exit_code == 0, again.output
    assert len(handler.received) == 2


def test_a_wrong_token_signs_nothing_and_burns_no_version(
    repo: Path, tmp_path: Path, api_server: tuple[str, type[_Recorder]]
) -> None:
    url, handler = api_server
    handler.whoami_status = 401
    image = write_image(tmp_path / "rom.img", 1000)
    result = _run(*_publish_args(repo, image, "1.0", "--server", url, "--token", "nope"))
    _assert_clean_failure(result, "nothing signed")
    assert list_releases(repo) == []
    handler.whoami_status = 200
    again = _run(*_publish_args(repo, image, "1.0", "--server", url, "--token", "t0k"))
    assert again.exit_code == 0, again.output
    assert "release #1" in again.stdout


def test_a_server_that_is_down_signs_nothing(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 1000)
    down = f"http://127.0.0.1:{free_port()}"
    result = _run(*_publish_args(repo, image, "1.0", "--server", down, "--token", "t0k"))
    _assert_clean_failure(result, "cannot reach")
    assert list_releases(repo) == []


def test_dry_run_shows_the_release_and_writes_nothing(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 1000)
    before = snapshot_tree(repo)
    result = _run(*_publish_args(repo, image, "1.0", "--dry-run"))
    assert result.exit_code == 0, result.output
    assert "dry run, nothing signed: would publish rpi4/stable 1.0 (release #1)" in result.stdout
    assert snapshot_tree(repo) == before


def test_a_channel_that_does_not_exist_is_refused(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 1000)
    args = [a for a in _publish_args(repo, image, "1.0") if a != "--new-channel"]
    _assert_clean_failure(_run(*args), "channel 'stable' does not exist yet")
    assert list_releases(repo) == []
    made = _run("keys", "add-channel", "stable", "--repo", str(repo))
    assert made.exit_code == 0, made.output
    assert _run(*args).exit_code == 0


def test_renew(repo: Path) -> None:
    result = _run("release", "renew", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "renewed metadata/timestamp.json"


def test_keys_app_is_a_group_on_its_own() -> None:
    result = CliRunner().invoke(keys_app, ["init", "--help"])
    assert result.exit_code == 0
    assert "--root-threshold" in result.stdout
