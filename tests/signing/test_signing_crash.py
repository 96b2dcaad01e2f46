"""A publish that fails or is killed after any number of writes leaves the old repository
valid for every client, and the next publish goes through."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from signing.keys import init_keys
from signing.repo import PublishedRelease, list_releases, publish_release
from signing.storage import LocalStorage, Storage
from signing.testing import (
    FaultyStorage,
    InjectedFaultError,
    TufClient,
    serve_directory,
    snapshot_tree,
    write_image,
)

WRITES_PER_PUBLISH = 4  # target, N.stable.json, N.snapshot.json, timestamp.json
CHUNK = 32 * 1024


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    init_keys(tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture
def base_url(repo: Path) -> Iterator[str]:
    with serve_directory(repo / "repository") as url:
        yield url


def _publish(
    repo: Path, image: Path, version: str, storage: Storage | None = None
) -> PublishedRelease:
    return publish_release(
        repo,
        image,
        version=version,
        channel="stable",
        model="rpi4",
        storage=storage,
        chunk_size=CHUNK,
    )


def _client(repo: Path, workdir: Path, base_url: str) -> TufClient:
    return TufClient(workdir, base_url, (repo / "root.json").read_bytes())


def _assert_still_old(
    repo: Path, tmp_path: Path, base_url: str, old: PublishedRelease, tag: str
) -> None:
    """A fresh device and one that refreshed before both still see exactly the old release."""
    assert list_releases(repo) == [old]
    for device in ("device-before", f"fresh-{tag}"):
        updater = _client(repo, tmp_path / device, base_url).refresh()
        assert updater.get_targetinfo("rpi4/stable/2026.49/rom.img") is None
    _, data = _client(repo, tmp_path / f"fetch-{tag}", base_url).fetch(old.target_path)
    assert data == (tmp_path / "old.img").read_bytes()


def _assert_next_publish_works(repo: Path, tmp_path: Path, base_url: str) -> None:
    new_image = write_image(tmp_path / "rom.img", 300_000, seed=2)
    new = _publish(repo, new_image, "2026.49")
    for device in ("device-before", "fresh-after"):
        _, data = _client(repo, tmp_path / device, base_url).fetch(new.target_path)
        assert data == new_image.read_bytes()


def _published_old(repo: Path, tmp_path: Path, base_url: str) -> PublishedRelease:
    old = _publish(repo, write_image(tmp_path / "old.img", 200_000, seed=1), "2026.48")
    _client(repo, tmp_path / "device-before", base_url).refresh()
    return old


def test_writes_happen_in_order_with_timestamp_last(repo: Path, tmp_path: Path) -> None:
    recorder = FaultyStorage(LocalStorage(repo / "repository"), allowed_writes=1000)
    release = _publish(repo, write_image(tmp_path / "rom.img", 5000), "1.0", recorder)
    assert recorder.written == [  # the first release on a channel also creates its role
        f"targets/rpi4/stable/1.0/{release.sha256}.rom.img",
        "metadata/2.targets.json",
        "metadata/1.stable.json",
        "metadata/2.snapshot.json",
        "metadata/timestamp.json",
    ]


@pytest.mark.parametrize("allowed", range(WRITES_PER_PUBLISH))
def test_publish_failing_after_k_writes_leaves_the_old_repository(
    repo: Path, tmp_path: Path, base_url: str, allowed: int
) -> None:
    old = _published_old(repo, tmp_path, base_url)
    live_timestamp = (repo / "repository/metadata/timestamp.json").read_bytes()
    faulty = FaultyStorage(LocalStorage(repo / "repository"), allowed_writes=allowed)
    image = write_image(tmp_path / "rom.img", 300_000, seed=2)

    with pytest.raises(InjectedFaultError):
        _publish(repo, image, "2026.49", faulty)

    assert len(faulty.written) == allowed
    assert (repo / "repository/metadata/timestamp.json").read_bytes() == live_timestamp
    _assert_still_old(repo, tmp_path, base_url, old, "after-fault")
    _assert_next_publish_works(repo, tmp_path, base_url)


_KILLED_PUBLISH = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from signing.repo import publish_release
    from signing.storage import LocalStorage
    from signing.testing import FaultyStorage

    repo, image, allowed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    storage = FaultyStorage(
        LocalStorage(repo / "repository"), allowed, on_fault=lambda name: os._exit(17)
    )
    publish_release(repo, image, version="2026.49", channel="stable", model="rpi4",
                    storage=storage, chunk_size=32768)
    os._exit(0)
    """
)


@pytest.mark.parametrize("allowed", range(WRITES_PER_PUBLISH))
def test_publish_killed_after_k_writes_leaves_the_old_repository(
    repo: Path, tmp_path: Path, base_url: str, allowed: int
) -> None:
    old = _published_old(repo, tmp_path, base_url)
    before = snapshot_tree(repo / "repository" / "metadata")
    image = write_image(tmp_path / "rom.img", 300_000, seed=2)

    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_PUBLISH, str(repo), str(image), str(allowed)],
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 17, proc.stderr.decode()
    after = snapshot_tree(repo / "repository" / "metadata")
    assert {name: after[name] for name in before} == before  # nothing live was rewritten
    _assert_still_old(repo, tmp_path, base_url, old, "after-kill")
    _assert_next_publish_works(repo, tmp_path, base_url)
