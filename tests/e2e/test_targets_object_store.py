"""Images from the object store, not through the API server: the real agent, the real server
(uvicorn), moto's S3 server over real HTTP. The server answers /tuf/targets/ with a redirect
to a presigned GET (or a public/CDN base URL); the device needs no S3 credential, follows it,
and TUF checks every byte: a tampered object is refused. No signature reaches a log."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from agent.errors import TransportError
from agent.fetcher import make_fetcher
from hardware.bootcontrol import Slot
from lab.fleet import KIB, MIB, Backend, Board, running_backend
from lab.net import free_port
from server.access_log import ACCESS_LOGGER
from signing.repo import PublishedRelease, publish_release, target_storage_name
from signing.storage import LocalStorage, S3Storage, SplitStorage
from wire import TUF_TARGETS_PATH, FailureReason, UpdateState

BOARD = Board(model="board", slot_size=4 * MIB, image_size=MIB + 3 * KIB + 5, chunk_size=256 * KIB)
PREFIX = "ota/repo"
TARGETS_ROUTE = TUF_TARGETS_PATH + "{target:path}"
SECRET_MARKS = ("Signature", "X-Amz-Credential", "AWSAccessKeyId")
OBJECT_STORE_LOGGER = "werkzeug"  # moto's own access log: the store sees its URLs, we do not


@pytest.fixture
def bucket(moto_s3_endpoint: str, s3_env: None) -> str:
    """A private bucket: nothing in it is readable without a signature."""
    name = f"ota-images-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def env(tmp_path: Path, bucket: str, moto_s3_endpoint: str) -> Iterator[Backend]:
    with running_backend(
        tmp_path,
        BOARD,
        targets_store=f"s3://{bucket}/{PREFIX}",
        s3_endpoint_url=moto_s3_endpoint,
        targets_url_ttl_s=300,
    ) as backend:
        yield backend


def store_of(env: Backend, bucket: str, endpoint: str) -> SplitStorage:
    """What the release engineer publishes through: metadata into the server's repository,
    images into the bucket."""
    return SplitStorage(
        LocalStorage(env.repo / "repository"), S3Storage(bucket, PREFIX, endpoint_url=endpoint)
    )


def publish(env: Backend, store: SplitStorage, version: str) -> PublishedRelease:
    release = publish_release(
        env.repo,
        env.build(version),
        version=version,
        channel="stable",
        model=BOARD.model,
        storage=store,
        chunk_size=BOARD.chunk_size,
    )
    env.register(release)
    return release


def target_answers(records: list[logging.LogRecord]) -> list[int]:
    return [
        int(getattr(r, "status", 0))
        for r in records
        if r.name == ACCESS_LOGGER and getattr(r, "route", "") == TARGETS_ROUTE
    ]


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        if record.name == OBJECT_STORE_LOGGER:
            continue
        text = record.getMessage()
        assert not any(mark in text for mark in SECRET_MARKS), (record.name, text)


def test_agent_installs_a_build_whose_bytes_came_from_the_object_store(
    env: Backend, bucket: str, moto_s3_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = store_of(env, bucket, moto_s3_endpoint)
    release = publish(env, store, "1.0")
    name = target_storage_name(release.target_path, release.sha256)
    assert not (env.repo / "repository" / name).exists()  # the server has no copy to serve
    assert store.targets.exists(name)
    caplog.clear()  # from here on: the server and the device only (not the publisher's boto3)
    agent, sim = env.start_agent("dev-1")
    agent.poll_once()
    assert agent.record.state is UpdateState.COMMITTED, agent.record
    with sim.slot_path(Slot.B).open("rb") as f:
        assert hashlib.sha256(f.read(release.length)).hexdigest() == release.sha256
    answers = target_answers(caplog.records)
    assert answers, "the device never asked the server for the image"
    assert set(answers) == {307}  # only redirects: the server sent none of the image's bytes
    assert_no_secret_logged(caplog)


def test_a_tampered_object_in_the_store_is_refused_by_tuf(
    env: Backend, bucket: str, moto_s3_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = store_of(env, bucket, moto_s3_endpoint)
    agent, sim = env.start_agent("dev-1")
    before = hashlib.sha256(sim.slot_path(Slot.A).read_bytes()).hexdigest()
    release = publish_release(
        env.repo,
        env.build("1.0"),
        version="1.0",
        channel="stable",
        model=BOARD.model,
        storage=store,
        chunk_size=BOARD.chunk_size,
    )
    name = target_storage_name(release.target_path, release.sha256)
    data = bytearray(store.targets.get_bytes(name) or b"")
    data[len(data) // 3] ^= 0x01  # whoever can write the bucket cannot pass TUF
    store.targets.put_bytes(name, bytes(data))
    env.register(release)
    caplog.clear()  # from here on: the server and the device only (not the publisher's boto3)
    agent.poll_once()
    assert agent.record.state is UpdateState.FAILED
    assert agent.record.reason is FailureReason.HASH_MISMATCH
    status = sim.status()
    assert (status.active, status.committed) == (Slot.A, Slot.A)
    assert hashlib.sha256(sim.slot_path(Slot.A).read_bytes()).hexdigest() == before
    assert set(target_answers(caplog.records)) == {307}
    assert_no_secret_logged(caplog)


def test_the_redirect_needs_no_credential_and_its_link_is_bounded(
    env: Backend, bucket: str, moto_s3_endpoint: str
) -> None:
    store = store_of(env, bucket, moto_s3_endpoint)
    release = publish(env, store, "1.0")
    name = target_storage_name(release.target_path, release.sha256)
    url = f"{env.server_url}/tuf/{name}"
    answer = httpx.get(url, follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["Cache-Control"] == "no-store"
    location = answer.headers["Location"]
    assert location.startswith(f"{moto_s3_endpoint}/{bucket}/{PREFIX}/targets/")
    assert "X-Amz-Expires=300" in location
    # a plain client (no AWS keys at all) follows it, with a Range, as a resuming device does
    part = httpx.get(url, headers={"Range": "bytes=100-199"}, follow_redirects=True)
    assert part.status_code == 206
    assert part.content == env.build("1.0").read_bytes()[100:200]
    # the bucket itself is private: the bare object URL, unsigned, is refused
    bare = httpx.get(location.split("?", 1)[0])
    assert bare.status_code == 403


def test_a_failed_fetch_names_no_signature(caplog: pytest.LogCaptureFixture) -> None:
    """A presigned link to a store that is down: urllib3's error repeats the whole URL; the
    device's error and log lines keep the path and drop the query."""
    caplog.set_level(logging.DEBUG)
    dead = f"http://127.0.0.1:{free_port()}/bucket/rom.img?X-Amz-Signature=abc123&X-Amz-Expires=9"
    with pytest.raises(TransportError) as caught:
        list(make_fetcher().fetch_range(dead))
    assert "/bucket/rom.img?..." in str(caught.value)
    assert "abc123" not in str(caught.value)
    assert not any("abc123" in r.getMessage() for r in caplog.records)
