"""Where devices fetch images when they do not come from the API servers: the object store
the release's targets were published to (a presigned GET that expires) or a CDN / public-read
base URL in front of it. The server answers `/tuf/targets/...` with a redirect there and sends
no image bytes itself; the device follows it and checks every byte against the signed TUF
metadata as before, so the store is trusted for availability only (docs/decisions/0023).

A presigned URL's query string is a bearer secret until it expires: it is built here, sent in
one Location header, and never logged (the access log drops query strings, and the redirect
is not a request the server makes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urlparse

from server.services.files import repo_pieces
from signing.errors import StorageError
from signing.storage import MAX_PRESIGN_S, S3Storage

DEFAULT_URL_TTL_S = 900  # long enough to start a download; Range resumes ask again
SIGNING_LOGGER = "botocore.auth"  # logs every signature it computes, at DEBUG


class _DropSignatures(logging.Filter):
    """botocore's signing log holds each presigned URL's signature, a credential until it
    expires: none of its records is let through, whatever the log level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


class TargetLinks(Protocol):
    def url_for(self, relpath: str) -> str:
        """Where the bytes of `targets/<relpath>` are (NotFoundError for a bad path)."""


@dataclass(frozen=True)
class PublicTargets:
    """A CDN or public-read bucket holding the repository's `targets/` at `base_url`."""

    base_url: str

    def url_for(self, relpath: str) -> str:
        pieces = repo_pieces("targets", relpath)
        return f"{self.base_url.rstrip('/')}/{'/'.join(quote(p) for p in pieces)}"


@dataclass(frozen=True)
class PresignedTargets:
    """A private bucket: each redirect carries its own presigned GET, valid `ttl_s` seconds."""

    store: S3Storage
    ttl_s: int = DEFAULT_URL_TTL_S

    def url_for(self, relpath: str) -> str:
        pieces = repo_pieces("targets", relpath)
        return self.store.presigned_get("targets/" + "/".join(pieces), self.ttl_s)


def target_links(
    *, store_url: str, public_url: str, ttl_s: float, s3_endpoint_url: str
) -> TargetLinks | None:
    """The links the settings ask for: a public base URL wins, else presigned GETs from an
    `s3://bucket/prefix` store, else None (the server serves the images from its repo_dir).
    Raises ValueError, one line, for settings that cannot work."""
    if public_url:
        if urlparse(public_url).scheme not in ("http", "https"):
            raise ValueError(f"the targets' public URL must be http(s)://, not {public_url!r}")
        return PublicTargets(public_url)
    if not store_url:
        return None
    parsed = urlparse(store_url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"the targets' store must be s3://bucket[/prefix], not {store_url!r}")
    if not 1 <= ttl_s <= MAX_PRESIGN_S:
        raise ValueError(f"a presigned target URL lives 1..{MAX_PRESIGN_S} s, not {ttl_s:g}")
    try:
        store = S3Storage(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url or None)
    except StorageError as exc:
        raise ValueError(str(exc)) from None
    signing_log = logging.getLogger(SIGNING_LOGGER)
    if not any(isinstance(f, _DropSignatures) for f in signing_log.filters):
        signing_log.addFilter(_DropSignatures())
    return PresignedTargets(store, int(ttl_s))
