"""Progress of a publish (issue 11): hashing, signing and uploading report every byte and
step to the `signing.progress.Progress` they are given, up to the total they announced;
`ota release publish --progress` draws them on stderr and never on the --json output."""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from server.cli import app as ota
from signing.digest import digest_image
from signing.keys import init_keys
from signing.progress import BYTES, STEPS
from signing.repo import publish_release
from signing.storage import S3Storage
from signing.testing import write_image

MIB = 1024 * 1024


@dataclass
class Task:
    total: int
    unit: str
    done: int = 0
    calls: int = 0


@dataclass
class Recorder:
    """A `Progress` that remembers every task and how far each got."""

    tasks: dict[str, Task] = field(default_factory=dict)

    def task(self, description: str, total: int, unit: str = BYTES) -> Callable[[int], None]:
        assert description not in self.tasks
        task = self.tasks[description] = Task(total, unit)

        def advance(done: int) -> None:
            task.done += done
            task.calls += 1

        return advance


@settings(max_examples=30, deadline=None)
@given(size=st.integers(min_value=0, max_value=300_000), chunk=st.integers(1, 70_000))
def test_hashing_reports_every_byte_once_a_chunk(size: int, chunk: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = write_image(Path(tmp) / "rom.img", size)
        told: list[int] = []
        digest = digest_image(image, chunk, told.append)
    assert sum(told) == size == digest.length
    assert len(told) == len(digest.chunk_sha256)
    assert digest.sha256 == hashlib.sha256(image_bytes(size)).hexdigest()


def image_bytes(size: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return write_image(Path(tmp) / "rom.img", size).read_bytes()


def test_a_publish_reaches_the_total_of_each_step(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_keys(repo)
    size = 3 * MIB + 5
    first = write_image(tmp_path / "rom1.img", size, seed=1)
    publish_release(repo, first, version="1.0", channel="stable", model="sim")
    second = write_image(tmp_path / "rom2.img", size, seed=2)
    progress = Recorder()
    release = publish_release(
        repo,
        second,
        version="1.1",
        channel="stable",
        model="sim",
        chunk_size=MIB,
        progress=progress,
    )
    tasks = progress.tasks
    assert set(tasks) == {"hashing", "delta from 1.0", "signing", "uploading"}
    assert (tasks["hashing"].total, tasks["hashing"].unit) == (release.length, BYTES)
    assert tasks["hashing"].calls > 1  # one a chunk, not one at the end
    assert (tasks["signing"].unit, tasks["delta from 1.0"].unit) == (STEPS, STEPS)
    uploaded = tasks["uploading"]
    assert uploaded.total > release.length  # the image and its delta
    assert all(task.done == task.total for task in tasks.values()), tasks


def test_an_upload_to_s3_reports_every_byte(
    moto_s3_endpoint: str, s3_env: None, tmp_path: Path
) -> None:
    client: Any = boto3.client("s3", endpoint_url=moto_s3_endpoint)
    bucket = f"ota-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    store = S3Storage(
        bucket, client=client, multipart_threshold=1 * MIB, multipart_chunksize=5 * MIB
    )
    image = write_image(tmp_path / "rom.img", 6 * MIB + 17)
    told: list[int] = []
    store.put_file("targets/big.img", image, told.append)
    assert sum(told) == image.stat().st_size


def _publish(tmp_path: Path, *flags: str) -> Any:
    repo = tmp_path / "repo"
    init_keys(repo)
    image = write_image(tmp_path / "rom.img", 2 * MIB)
    args = ["release", "publish", str(image), "--repo", str(repo), "--version", "1.0"]
    args += ["--channel", "stable", "--model", "sim", "--new-channel", *flags]
    result = CliRunner().invoke(ota, args, env={"OTA_KEY_PASSPHRASE": "", "COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result


def test_the_bars_go_to_stderr_and_the_json_stays_clean(tmp_path: Path) -> None:
    result = _publish(tmp_path, "--json", "--progress")
    assert json.loads(result.stdout)["version"] == "1.0"
    for step in ("hashing", "signing", "uploading"):
        assert step in result.stderr
    assert "100%" in result.stderr


@pytest.mark.parametrize("flags", [(), ("--no-progress",)])
def test_no_bars_when_stderr_is_no_terminal_or_they_are_off(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    result = _publish(tmp_path, *flags)
    assert "hashing" not in result.stderr
    assert result.stdout.startswith("published sim/stable 1.0")
