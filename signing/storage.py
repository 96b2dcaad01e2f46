"""Where a TUF repository lives: a local folder or an S3 bucket, behind one small interface.

Names are `/`-separated relative paths (`metadata/timestamp.json`,
`targets/rpi4/stable/2026.48/<sha256>.rom.img`). Every write is all or nothing: a reader sees
the old object or the new one, never a partial one. That is what lets `publish_release` order
its writes so that a killed publish leaves the previous repository valid.

Backend failures (OSError, botocore errors) become `StorageError` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypedDict
from urllib.parse import unquote, urlparse

import durable
from signing.errors import StorageError

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = [
    "LocalStorage",
    "S3Storage",
    "SplitStorage",
    "Storage",
    "StorageError",
    "check_name",
    "open_storage",
]

_PUBLIC = 0o644  # a repository is for everyone to read
_MIB = 1024 * 1024
MAX_PRESIGN_S = 7 * 24 * 3600  # S3's own limit for a SigV4 presigned URL


class Storage(Protocol):
    """A flat namespace of immutable-until-replaced objects."""

    def put_file(
        self, name: str, path: Path, progress: Callable[[int], None] | None = None
    ) -> None:
        """Store the content of the local file `path` under `name` (streamed, all or nothing);
        `progress` is told how many more bytes went each time some did."""

    def put_bytes(self, name: str, data: bytes) -> None:
        """Store `data` under `name`, atomically replacing any previous object."""

    def get_bytes(self, name: str) -> bytes | None:
        """The object's content, or None when there is no such object."""

    def get_file(self, name: str, dest: Path) -> bool:
        """Copy the object into the local file `dest` (streamed); False when there is none."""

    def exists(self, name: str) -> bool:
        """Whether an object called `name` exists."""


def check_name(name: str) -> str:
    """Return `name` if it is a safe relative `/`-separated path, else raise StorageError."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise StorageError(f"invalid storage name {name!r}: use a relative path with '/'")
    if any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"invalid storage name {name!r}: empty, '.' or '..' segment")
    return name


# --------------------------------------------------------------------------- local folder


def _copy_counted(src: BinaryIO, progress: Callable[[int], None]) -> Callable[[BinaryIO], None]:
    """A `durable.atomic_write_stream` writer: copies `src` and tells `progress` as it goes."""

    def write_to(out: BinaryIO) -> None:
        while chunk := src.read(_MIB):
            out.write(chunk)
            progress(len(chunk))

    return write_to


@contextlib.contextmanager
def _os_errors(action: str, where: object) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot {action} {where}: {exc.strerror or exc}") from exc


class LocalStorage:
    """A folder; each write is `durable`'s: a temp file in the same directory, fsync, rename,
    fsync the directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name).split("/"))

    def put_file(
        self, name: str, path: Path, progress: Callable[[int], None] | None = None
    ) -> None:
        dest = self._path(name)
        with _os_errors("store", dest), Path(path).open("rb") as src:
            durable.ensure_dir(dest.parent)
            if progress is None:
                durable.atomic_copy(dest, src, mode=_PUBLIC)
            else:
                durable.atomic_write_stream(dest, _copy_counted(src, progress), mode=_PUBLIC)

    def put_bytes(self, name: str, data: bytes) -> None:
        dest = self._path(name)
        with _os_errors("store", dest):
            durable.ensure_dir(dest.parent)
            durable.atomic_write(dest, data, mode=_PUBLIC)

    def get_bytes(self, name: str) -> bytes | None:
        path = self._path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def get_file(self, name: str, dest: Path) -> bool:
        path = self._path(name)
        try:
            with path.open("rb") as src, Path(dest).open("wb") as out:
                shutil.copyfileobj(src, out, _MIB)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot copy {path} to {dest}: {exc.strerror or exc}") from exc
        return True

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()


# --------------------------------------------------------------------------- S3


class _ObjectHeaders(TypedDict, total=False):
    ContentType: str
    CacheControl: str


def _object_headers(name: str) -> _ObjectHeaders:
    """Content type, and no caching for the one name that is rewritten (timestamp.json):
    a CDN in front of the bucket must not hide a new release behind a stale timestamp."""
    json_file = name.endswith(".json")
    headers = _ObjectHeaders(
        ContentType="application/json" if json_file else "application/octet-stream"
    )
    if name.rpartition("/")[2] == "timestamp.json":
        headers["CacheControl"] = "no-cache"
    return headers


class S3Storage:
    """An S3 bucket (or a prefix in one). S3 object writes are atomic by themselves; large
    files go up in parts (boto3 TransferConfig) and appear only when the upload completes."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: S3Client | None = None,
        *,
        multipart_threshold: int = 64 * _MIB,
        multipart_chunksize: int = 16 * _MIB,
    ) -> None:
        if not bucket:
            raise StorageError("S3 storage needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client if client is not None else _make_client(endpoint_url)
        self._transfer = _transfer_config(multipart_threshold, multipart_chunksize)

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix})"

    def key(self, name: str) -> str:
        """The object key `name` is stored under."""
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def put_file(
        self, name: str, path: Path, progress: Callable[[int], None] | None = None
    ) -> None:
        key = self.key(name)
        with self._errors("upload", key):
            self._client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs=dict(_object_headers(name)),
                Callback=progress,
                Config=self._transfer,
            )

    def put_bytes(self, name: str, data: bytes) -> None:
        key = self.key(name)
        with self._errors("write", key):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **_object_headers(name))

    def get_bytes(self, name: str) -> bytes | None:
        key = self.key(name)
        with self._errors("read", key):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except self._client.exceptions.NoSuchKey:
                return None
            return response["Body"].read()

    def get_file(self, name: str, dest: Path) -> bool:
        if not self.exists(name):
            return False
        key = self.key(name)
        with self._errors("download", key):
            self._client.download_file(self.bucket, key, str(dest), Config=self._transfer)
        return True

    def presigned_get(self, name: str, expires_s: int) -> str:
        """A URL that lets anyone GET (and resume with Range) this one object for `expires_s`
        seconds, no credential needed: signed here, locally, with the server's own. Its query
        string is a bearer secret until it expires: it must not be logged."""
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise StorageError(f"a presigned URL lives 1..{MAX_PRESIGN_S} s, not {expires_s}")
        key = self.key(name)
        with self._errors("presign", key):
            return self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )

    def exists(self, name: str) -> bool:
        key = self.key(name)
        with self._errors("look up", key):
            try:
                self._client.head_object(Bucket=self.bucket, Key=key)
            except self._client.exceptions.ClientError as exc:
                if _status(exc) == 404:
                    return False
                raise
            return True

    @contextlib.contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
            raise StorageError(f"cannot {action} s3://{self.bucket}/{key}: {exc}") from exc


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _make_client(endpoint_url: str | None) -> S3Client:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    try:  # SigV4 everywhere: its presigned URLs say their lifetime (X-Amz-Expires, <= 7 days)
        return boto3.client(
            "s3", endpoint_url=endpoint_url, config=Config(signature_version="s3v4")
        )
    except (BotoCoreError, ValueError) as exc:
        raise StorageError(f"cannot set up S3 (endpoint {endpoint_url!r}): {exc}") from exc


def _transfer_config(threshold: int, chunksize: int) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=threshold, multipart_chunksize=chunksize)


# --------------------------------------------------------------------------- split


class SplitStorage:
    """Metadata in one place, images in another: `targets/...` names go to `targets`, every
    other name to `metadata`. A server keeps the metadata it serves and re-signs on its own
    disk while devices fetch the images from an object store or CDN (docs/decisions/0023)."""

    def __init__(self, metadata: Storage, targets: Storage) -> None:
        self.metadata = metadata
        self.targets = targets

    def __repr__(self) -> str:
        return f"SplitStorage(metadata={self.metadata!r}, targets={self.targets!r})"

    def _store(self, name: str) -> Storage:
        return self.targets if check_name(name).startswith("targets/") else self.metadata

    def put_file(
        self, name: str, path: Path, progress: Callable[[int], None] | None = None
    ) -> None:
        self._store(name).put_file(name, path, progress)

    def put_bytes(self, name: str, data: bytes) -> None:
        self._store(name).put_bytes(name, data)

    def get_bytes(self, name: str) -> bytes | None:
        return self._store(name).get_bytes(name)

    def get_file(self, name: str, dest: Path) -> bool:
        return self._store(name).get_file(name, dest)

    def exists(self, name: str) -> bool:
        return self._store(name).exists(name)


# --------------------------------------------------------------------------- URLs


def open_storage(url: str, *, s3_endpoint_url: str | None = None) -> Storage:
    """`s3://bucket/prefix` → S3Storage; `file:///dir` or a plain path → LocalStorage."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return S3Storage(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file URL with a host is not supported: {url!r}")
        return LocalStorage(Path(unquote(parsed.path)))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise StorageError(f"unsupported storage URL {url!r}: use a path, file:// or s3://")
    if not url:
        raise StorageError("empty storage URL")
    return LocalStorage(Path(url))
