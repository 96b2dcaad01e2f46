"""Storage backends: a local folder and S3 (moto's server over real HTTP)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from signing.keys import init_keys
from signing.repo import list_releases, publish_release
from signing.storage import LocalStorage, S3Storage, StorageError, check_name, open_storage
from signing.testing import TufClient, write_image

MIB = 1024 * 1024


@pytest.mark.parametrize(
    "name", ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a\\b", "a/", "x\x00y"]
)
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(StorageError, match="invalid storage name"):
        check_name(name)
    with pytest.raises(StorageError):
        LocalStorage(tmp_path).put_bytes(name, b"x")
    assert list(tmp_path.iterdir()) == []


def test_local_storage_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    assert store.get_bytes("metadata/timestamp.json") is None
    assert not store.exists("metadata/timestamp.json")
    store.put_bytes("metadata/timestamp.json", b"old")
    store.put_bytes("metadata/timestamp.json", b"new")
    assert store.get_bytes("metadata/timestamp.json") == b"new"
    image = write_image(tmp_path / "rom.img", 3 * MIB + 5)
    store.put_file("targets/m/c/1/abc.rom.img", image)
    assert store.get_bytes("targets/m/c/1/abc.rom.img") == image.read_bytes()
    assert store.exists("targets/m/c/1/abc.rom.img")
    leftovers = [p.name for p in (tmp_path / "root").rglob(".*")]
    assert leftovers == []


def test_local_storage_failures_become_storage_errors(tmp_path: Path) -> None:
    (tmp_path / "metadata").write_bytes(b"a file where a folder should be")
    store = LocalStorage(tmp_path)
    with pytest.raises(StorageError, match="cannot store"):
        store.put_bytes("metadata/timestamp.json", b"x")
    with pytest.raises(StorageError, match="cannot store"):
        store.put_file("targets/x.img", tmp_path / "missing.img")
    (tmp_path / "targets").mkdir()
    with pytest.raises(StorageError, match="cannot read"):
        store.get_bytes("targets")  # a folder, not an object


def test_open_storage_dispatches_on_the_url(tmp_path: Path) -> None:
    local = open_storage(str(tmp_path))
    assert isinstance(local, LocalStorage)
    assert local.root == tmp_path
    from_url = open_storage(f"file://{tmp_path}")
    assert isinstance(from_url, LocalStorage)
    assert from_url.root == tmp_path
    s3 = open_storage("s3://bucket/some/prefix/", s3_endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.key("metadata/timestamp.json")) == (
        "bucket",
        "some/prefix/metadata/timestamp.json",
    )
    with pytest.raises(StorageError, match="unsupported storage URL"):
        open_storage("ftp://example.com/repo")
    with pytest.raises(StorageError, match="cannot set up S3"):
        open_storage("s3://bucket", s3_endpoint_url="not a url")


# --------------------------------------------------------------------------- S3 (moto server)


@pytest.fixture
def s3_client(moto_s3_endpoint: str, s3_env: None) -> Any:
    return boto3.client("s3", endpoint_url=moto_s3_endpoint)


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"ota-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


def test_s3_storage_round_trip(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    store = S3Storage(bucket, "repo", client=s3_client)
    assert store.get_bytes("metadata/timestamp.json") is None
    assert not store.exists("metadata/timestamp.json")
    store.put_bytes("metadata/timestamp.json", b"{}")
    assert store.exists("metadata/timestamp.json")
    assert store.get_bytes("metadata/timestamp.json") == b"{}"
    head = s3_client.head_object(Bucket=bucket, Key="repo/metadata/timestamp.json")
    assert head["ContentType"] == "application/json"
    assert head["CacheControl"] == "no-cache"


def test_s3_large_file_goes_up_in_parts(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rom.img", 6 * MIB + 17, seed=3)
    store = S3Storage(
        bucket, client=s3_client, multipart_threshold=1 * MIB, multipart_chunksize=5 * MIB
    )
    store.put_file("targets/big.img", image)
    head = s3_client.head_object(Bucket=bucket, Key="targets/big.img")
    assert head["ETag"].strip('"').endswith("-2")  # an S3 multipart ETag: two parts
    assert store.get_bytes("targets/big.img") == image.read_bytes()


def test_s3_failures_become_storage_errors(
    s3_client: Any, moto_s3_endpoint: str, tmp_path: Path
) -> None:
    missing = S3Storage(f"no-such-{uuid.uuid4().hex[:8]}", client=s3_client)
    with pytest.raises(StorageError, match="NoSuchBucket"):
        missing.put_bytes("metadata/timestamp.json", b"{}")
    with pytest.raises(StorageError, match="cannot upload"):
        missing.put_file("targets/x.img", write_image(tmp_path / "x.img", 10))
    dead = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(StorageError, match="cannot read"):
        S3Storage("bucket", client=dead).get_bytes("metadata/timestamp.json")


def test_publish_into_s3_is_verified_by_ngclient_over_http(
    moto_s3_endpoint: str, s3_client: Any, tmp_path: Path
) -> None:
    bucket = f"ota-public-{uuid.uuid4().hex[:8]}"  # served to devices as static files (a CDN)
    s3_client.create_bucket(Bucket=bucket, ACL="public-read")
    url = f"s3://{bucket}/ota/repo"
    store = open_storage(url, s3_endpoint_url=moto_s3_endpoint)
    trusted = init_keys(tmp_path / "keys", storage=store)
    image = write_image(tmp_path / "rom.img", 2 * MIB + 3, seed=4)
    release = publish_release(
        tmp_path / "keys",
        image,
        version="2026.48",
        channel="stable",
        model="rpi4",
        storage=store,
        chunk_size=256 * 1024,
    )
    assert not (tmp_path / "keys" / "repository").exists()  # nothing went to the local default
    assert list_releases(tmp_path / "keys", storage=store) == [release]

    client = TufClient(
        tmp_path / "device", f"{moto_s3_endpoint}/{bucket}/ota/repo", trusted.read_bytes()
    )
    info, data = client.fetch(release.target_path)
    assert data == image.read_bytes()
    assert info.custom["release_counter"] == 1
