"""The TUF conformance client CLI, driven like tuf-conformance's ClientRunner drives it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.conformance import main
from lab.tufrepo import RepoServer, TufRepo, serve

ARTIFACT = "path/to/a/target_file.txt"
CONTENT = b"target file contents"


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    repo = TufRepo(tmp_path / "repo")
    repo.add_target(ARTIFACT, CONTENT)
    repo.publish()
    return repo


@pytest.fixture
def server(repo: TufRepo) -> Iterator[RepoServer]:
    yield from serve(repo.base)


class Client:
    """Paths and commands of one client under test (like ClientRunner)."""

    def __init__(self, base: Path, repo: TufRepo, server: RepoServer) -> None:
        self.metadata_dir = base / "metadata"
        self.target_dir = base / "targets"
        self.metadata_dir.mkdir(parents=True)
        self.target_dir.mkdir()
        self.trusted_root = base / "initial_root.json"
        self.trusted_root.write_bytes(repo.root_bytes())
        self.server = server

    def init(self) -> int:
        return main(["--metadata-dir", str(self.metadata_dir), "init", str(self.trusted_root)])

    def refresh(self) -> int:
        return main([*self._common(), "refresh"])

    def download(self, *names: str) -> int:
        named = [arg for name in names for arg in ("--target-name", name)]
        return main(
            [
                *self._common(),
                *named,
                *("--target-base-url", self.server.targets_url.rstrip("/")),
                *("--target-dir", str(self.target_dir)),
                "download",
            ]
        )

    def downloaded(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.target_dir.iterdir()}

    def trusted_json(self) -> list[str]:
        return sorted(p.name for p in self.metadata_dir.glob("*.json"))

    def _common(self) -> list[str]:
        url = self.server.metadata_url.rstrip("/")
        return ["--metadata-url", url, "--metadata-dir", str(self.metadata_dir)]


@pytest.fixture
def client(tmp_path: Path, repo: TufRepo, server: RepoServer) -> Client:
    return Client(tmp_path / "client", repo, server)


def test_init_copies_the_root_and_fetches_nothing(client: Client, server: RepoServer) -> None:
    assert client.init() == 0
    assert client.trusted_json() == ["root.json"]
    assert (client.metadata_dir / "root.json").read_bytes() == client.trusted_root.read_bytes()
    assert server.faults.requests == []


def test_refresh_stores_the_exact_bytes_under_plain_names(client: Client, repo: TufRepo) -> None:
    assert client.init() == 0
    assert client.refresh() == 0
    assert client.trusted_json() == ["root.json", "snapshot.json", "targets.json", "timestamp.json"]
    served = repo.metadata_dir
    assert (client.metadata_dir / "timestamp.json").read_bytes() == (
        served / "timestamp.json"
    ).read_bytes()
    assert (client.metadata_dir / "targets.json").read_bytes() == (
        served / "2.targets.json"
    ).read_bytes()
    assert (client.metadata_dir / "root.json").read_bytes() == repo.root_bytes()


def test_download_round_trip_and_no_second_fetch(client: Client, server: RepoServer) -> None:
    assert client.init() == 0
    assert client.download(ARTIFACT) == 0
    assert client.downloaded() == {"path%2Fto%2Fa%2Ftarget_file.txt": CONTENT}
    fetched = server.faults.target_bytes()
    assert fetched == len(CONTENT)

    assert client.download(ARTIFACT) == 0  # already there with matching hashes
    assert server.faults.target_bytes() == fetched
    assert client.downloaded() == {"path%2Fto%2Fa%2Ftarget_file.txt": CONTENT}


def test_a_changed_artifact_replaces_the_stored_one(client: Client, repo: TufRepo) -> None:
    assert client.init() == 0
    assert client.download(ARTIFACT) == 0
    repo.add_target(ARTIFACT, b"modified file contents")
    repo.publish()
    assert client.download(ARTIFACT) == 0
    assert list(client.downloaded().values()) == [b"modified file contents"]


def test_several_target_names_in_one_call(client: Client, repo: TufRepo) -> None:
    repo.add_target("other.txt", b"other")
    repo.publish()
    assert client.init() == 0
    assert client.download(ARTIFACT, "other.txt") == 0
    assert sorted(client.downloaded().values()) == [b"other", CONTENT]


def test_substituted_artifact_fails_and_leaves_nothing(client: Client, repo: TufRepo) -> None:
    repo.add_target("another_target_file.txt", b"content")
    repo.publish()
    assert client.init() == 0
    assert client.download(ARTIFACT) == 0
    repo.target_file("another_target_file.txt").write_bytes(b"malicious data - don't store")
    assert client.download("another_target_file.txt") == 1
    assert client.downloaded() == {"path%2Fto%2Fa%2Ftarget_file.txt": CONTENT}


def test_bad_metadata_fails_refresh(client: Client, repo: TufRepo) -> None:
    assert client.init() == 0
    repo.expire_timestamp()
    assert client.refresh() == 1
    assert client.download(ARTIFACT) == 1
    assert client.downloaded() == {}


def test_unknown_target_fails(client: Client) -> None:
    assert client.init() == 0
    assert client.download("no/such/file") == 1


def test_delegated_role_names_are_quoted_in_file_names(client: Client, repo: TufRepo) -> None:
    repo.delegate("team/a", ["team/*"])
    repo.add_target("team/rom.img", b"delegated", role="team/a")
    repo.publish()
    assert client.init() == 0
    assert client.download("team/rom.img") == 0
    assert "team%2Fa.json" in client.trusted_json()
    assert list(client.downloaded().values()) == [b"delegated"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--metadata-dir", "x", "refresh"],
        ["--metadata-dir", "x", "--metadata-url", "http://127.0.0.1:9/", "download"],
        ["--metadata-dir", "x", "fly"],
    ],
)
def test_usage_errors_exit_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    assert "error" in capsys.readouterr().err


def test_refresh_without_init_fails(client: Client) -> None:
    assert client.refresh() == 1


def test_runs_as_a_program(client: Client, tmp_path: Path) -> None:
    """The conformance suite runs the client as a process: the exit code is what counts."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.conformance",
            "--metadata-dir",
            str(client.metadata_dir),
            "init",
            str(client.trusted_root),
        ],
        capture_output=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert run.returncode == 0, run.stderr
    assert client.refresh() == 0
