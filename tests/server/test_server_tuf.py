"""The TUF repository served as static files: Range requests, 404s, no way out of the repo."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.processes import live_server
from server.errors import NotFoundError
from server.services.files import repo_file
from server.settings import Settings
from server.testing import MOSQUITTO_PIPE_LEAK

TARGET = "sim/stable/2026.47/rom.img"
IMAGE = os.urandom(100_000)
ROOT_JSON = b'{"signed": {"_type": "root"}}'

pytestmark = pytest.mark.filterwarnings(MOSQUITTO_PIPE_LEAK)  # see server.testing


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    (root / "metadata").mkdir()
    (root / "metadata" / "1.root.json").write_bytes(ROOT_JSON)
    (root / "targets" / "sim/stable/2026.47").mkdir(parents=True)
    (root / "targets" / TARGET).write_bytes(IMAGE)
    (root / "secret.txt").write_text("outside metadata/ and targets/")
    (root / "targets" / "escape.img").symlink_to(root / "secret.txt")
    return root


@pytest.fixture(scope="module")
def base_url(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("db") / "ota.db"
    with live_server(Settings(db_url=f"sqlite:///{db}", repo_dir=repo)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=20) as client:
        yield client


def raw_get(base_url: str, path: str) -> int:
    """GET with the path sent exactly as written (httpx would normalise the dots away)."""
    parsed = urlparse(base_url)
    conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_metadata_and_targets_are_served_whole(client: httpx.Client) -> None:
    meta = client.get("/tuf/metadata/1.root.json")
    assert meta.status_code == 200
    assert meta.content == ROOT_JSON
    assert meta.headers["content-type"].startswith("application/json")
    target = client.get(f"/tuf/targets/{TARGET}")
    assert target.status_code == 200
    assert target.content == IMAGE
    assert target.headers["accept-ranges"] == "bytes"


def test_a_range_request_resumes_a_download(client: httpx.Client) -> None:
    part = client.get(f"/tuf/targets/{TARGET}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(IMAGE)}"
    assert part.content == IMAGE[1000:2000]
    rest = client.get(f"/tuf/targets/{TARGET}", headers={"Range": "bytes=99000-"})
    assert rest.status_code == 206
    assert rest.content == IMAGE[99000:]


def test_an_unsatisfiable_range_is_416(client: httpx.Client) -> None:
    beyond = client.get(f"/tuf/targets/{TARGET}", headers={"Range": f"bytes={len(IMAGE)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(IMAGE)}"


def test_missing_files_are_404(client: httpx.Client) -> None:
    assert client.get("/tuf/metadata/2.root.json").status_code == 404
    assert client.get("/tuf/targets/sim/stable/2026.47/other.img").status_code == 404
    assert client.get("/tuf/targets/sim/stable").status_code == 404  # a directory


@pytest.mark.parametrize(
    "path",
    [
        "/tuf/targets/../secret.txt",
        "/tuf/targets/%2e%2e/secret.txt",
        "/tuf/targets/sim/..%2f..%2fsecret.txt",
        "/tuf/metadata/..%2fsecret.txt",
        "/tuf/targets/escape.img",
        "/tuf/targets/%2fetc%2fpasswd",
    ],
)
def test_no_path_leaves_the_repository(base_url: str, path: str) -> None:
    assert raw_get(base_url, path) == 404


def test_the_path_check_itself(repo: Path) -> None:
    assert repo_file(repo, "targets", TARGET) == (repo / "targets" / TARGET).resolve()
    for bad in ("../secret.txt", "sim/../../secret.txt", "/etc/passwd", "a\\..\\b", ""):
        with pytest.raises(NotFoundError):
            repo_file(repo, "targets", bad)
    with pytest.raises(NotFoundError, match="does not serve a TUF repository"):
        repo_file(None, "targets", TARGET)


def test_without_a_repository_tuf_paths_are_404(tmp_path: Path) -> None:
    with live_server(Settings(db_url=f"sqlite:///{tmp_path / 'ota.db'}")) as url:
        answer = httpx.get(f"{url}/tuf/metadata/timestamp.json")
    assert answer.status_code == 404
    assert "does not serve a TUF repository" in answer.json()["detail"]


PIECES = st.sampled_from(["..", ".", "", "sim", "stable", "rom.img", "%2e%2e", "a\\b", "/", "~"])


@pytest.fixture(scope="module")
def maze(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with look-alike files outside targets/ to climb out to."""
    root = tmp_path_factory.mktemp("maze")
    (root / "targets" / "sim" / "stable").mkdir(parents=True)
    (root / "targets" / "sim" / "stable" / "rom.img").write_bytes(b"x")
    (root / "targets" / "rom.img").write_bytes(b"y")
    (root / "rom.img").write_bytes(b"outside")
    (root / "sim").mkdir()
    (root / "sim" / "rom.img").write_bytes(b"outside too")
    return root


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(PIECES, min_size=1, max_size=6))
def test_any_path_resolves_inside_the_repository_or_not_at_all(
    maze: Path, pieces: list[str]
) -> None:
    try:
        found = repo_file(maze, "targets", "/".join(pieces))
    except NotFoundError:
        return
    assert found.is_relative_to((maze / "targets").resolve())
    assert found.is_file()
