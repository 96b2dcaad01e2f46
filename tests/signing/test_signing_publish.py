"""Publishing, checked the way a device would: python-tuf's ngclient over loopback HTTP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata

from signing.errors import PublishError, RepositoryError
from signing.keys import init_keys
from signing.repo import PublishedRelease, list_releases, publish_release
from signing.storage import LocalStorage
from signing.testing import TufClient, serve_directory, snapshot_tree, write_image

CHUNK = 64 * 1024
PASS = "s3cret"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    init_keys(tmp_path / "repo", passphrase=PASS)
    return tmp_path / "repo"


@pytest.fixture
def base_url(repo: Path) -> Iterator[str]:
    with serve_directory(repo / "repository") as url:
        yield url


def _client(repo: Path, workdir: Path, base_url: str) -> TufClient:
    return TufClient(workdir, base_url, (repo / "root.json").read_bytes())


def _publish(repo: Path, image: Path, version: str, **kwargs: object) -> PublishedRelease:
    options: dict[str, object] = {"channel": "stable", "model": "rpi4", "passphrase": PASS}
    options.update(kwargs)
    return publish_release(repo, image, version=version, chunk_size=CHUNK, **options)  # type: ignore[arg-type]


def test_round_trip_through_ngclient(repo: Path, tmp_path: Path, base_url: str) -> None:
    image = write_image(tmp_path / "rom.img", 3 * 1024 * 1024 + 123, seed=1)
    release = _publish(repo, image, "2026.48", notes="faster boot", hardware_ids=["rpi4", "cm4"])

    info, data = _client(repo, tmp_path / "device", base_url).fetch(release.target_path)

    assert data == image.read_bytes()
    assert release.target_path == "rpi4/stable/2026.48/rom.img"
    assert release.sha256 == hashlib.sha256(data).hexdigest() == info.hashes["sha256"]
    assert release.length == len(data) == info.length
    custom = info.custom
    assert custom["version"] == "2026.48"
    assert custom["channel"] == "stable"
    assert custom["model"] == "rpi4"
    assert custom["hardware_ids"] == ["rpi4", "cm4"]
    assert custom["notes"] == "faster boot"
    assert custom["published_at"] == release.published_at
    assert release.published_at.endswith("Z")
    assert custom["release_counter"] == 1
    assert custom["chunk_size"] == CHUNK
    expected_chunks = [
        hashlib.sha256(data[i : i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)
    ]
    assert custom["chunk_sha256"] == expected_chunks
    assert len(expected_chunks) == 49  # 48 full chunks and a short last one


def test_consistent_snapshot_layout(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 100_000)
    release = _publish(repo, image, "2026.48")
    files = set(snapshot_tree(repo / "repository"))
    assert f"targets/rpi4/stable/2026.48/{release.sha256}.rom.img" in files
    assert {"metadata/2.targets.json", "metadata/2.snapshot.json"} <= files
    raw = (repo / "repository/metadata/timestamp.json").read_bytes()
    timestamp: Metadata[Any] = Metadata.from_bytes(raw)
    assert timestamp.signed.version == 2
    assert timestamp.signed.snapshot_meta.version == 2


def test_counter_and_defaults_per_channel_and_model(
    repo: Path, tmp_path: Path, base_url: str
) -> None:
    image = write_image(tmp_path / "rom.img", 200_000)
    first = _publish(repo, image, "2026.47")
    second = _publish(repo, image, "2026.48")
    preview = _publish(repo, image, "2026.48", channel="preview")
    other = _publish(repo, image, "1.0", model="pixel")
    assert (first.release_counter, second.release_counter) == (1, 2)
    assert (preview.release_counter, other.release_counter) == (1, 1)
    assert list_releases(repo) == [preview, other, first, second]  # channel, model, counter
    updater = _client(repo, tmp_path / "device", base_url).refresh()
    info = updater.get_targetinfo(other.target_path)
    assert info is not None
    assert info.custom["hardware_ids"] == ["pixel"]
    assert updater.get_targetinfo(first.target_path) is not None  # older builds stay signed


def test_a_device_that_already_refreshed_sees_the_next_release(
    repo: Path, tmp_path: Path, base_url: str
) -> None:
    client = _client(repo, tmp_path / "device", base_url)
    client.refresh()
    image = write_image(tmp_path / "rom.img", 150_000, seed=7)
    release = _publish(repo, image, "2026.48", filename="rom-v2.img")
    _, data = client.fetch(release.target_path)
    assert data == image.read_bytes()
    assert release.target_path.endswith("/rom-v2.img")


@pytest.mark.parametrize("version", ["2026.48", "2026.47", "2026.9"])
def test_equal_or_older_version_is_refused_and_nothing_changes(
    repo: Path, tmp_path: Path, version: str
) -> None:
    image = write_image(tmp_path / "rom.img", 100_000)
    _publish(repo, image, "2026.48")
    before = snapshot_tree(repo)
    with pytest.raises(PublishError, match=r"not newer than 2026\.48"):
        _publish(repo, write_image(tmp_path / "new.img", 1000, seed=2), version)
    assert snapshot_tree(repo) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "../etc"}, "invalid version"),
        ({"version": ""}, "invalid version"),
        ({"version": "1.0", "channel": "a/b"}, "invalid target path component"),
        ({"version": "1.0", "model": ".."}, "invalid target path component"),
        ({"version": "1.0", "chunk_size": 0}, "chunk size must be positive"),
    ],
)
def test_bad_input_is_refused_and_nothing_changes(
    repo: Path, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    image = write_image(tmp_path / "rom.img", 1000)
    before = snapshot_tree(repo)
    options: dict[str, object] = {"channel": "stable", "model": "rpi4", "passphrase": PASS}
    options.update(kwargs)
    with pytest.raises(PublishError, match=message):
        publish_release(repo, image, **options)  # type: ignore[arg-type]
    assert snapshot_tree(repo) == before


def test_missing_and_empty_images_are_refused(repo: Path, tmp_path: Path) -> None:
    before = snapshot_tree(repo)
    with pytest.raises(PublishError, match="image not found"):
        _publish(repo, tmp_path / "nope.img", "1.0")
    (tmp_path / "empty.img").write_bytes(b"")
    with pytest.raises(PublishError, match="image is empty"):
        _publish(repo, tmp_path / "empty.img", "1.0")
    assert snapshot_tree(repo) == before


def test_tampered_live_metadata_is_refused(repo: Path, tmp_path: Path) -> None:
    path = repo / "repository/metadata/1.targets.json"
    doc = json.loads(path.read_bytes())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    path.write_text(json.dumps(doc))
    with pytest.raises(RepositoryError, match="targets metadata is not signed by its keys"):
        _publish(repo, write_image(tmp_path / "rom.img", 1000), "1.0")


class _ImageChangingStorage(LocalStorage):
    """Someone rewrites the image while it is being uploaded."""

    def put_file(
        self, name: str, path: Path, progress: Callable[[int], None] | None = None
    ) -> None:
        with path.open("ab") as image:
            image.write(b"late edit")
        super().put_file(name, path, progress)


def test_an_image_that_changes_during_publish_is_not_made_live(repo: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 10_000)
    live = (repo / "repository/metadata/timestamp.json").read_bytes()
    storage = _ImageChangingStorage(repo / "repository")
    with pytest.raises(PublishError, match="changed while it was being published"):
        _publish(repo, image, "1.0", storage=storage)
    assert (repo / "repository/metadata/timestamp.json").read_bytes() == live
    assert list_releases(repo) == []
