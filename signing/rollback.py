"""Roll a channel back to an earlier build by publishing it again as a newer release.

TUF (and our agent) never install a version older than the one running, and the release
counter per channel and model only goes up, so "go back to V" cannot mean "point the devices
at V". It means: take V's image, exactly the bytes that were signed before, and sign it as a
new release whose version sorts after the latest one, `<latest>-rollback-to-<V>` (see
wire.versions: a version that extends another with more pieces sorts after it, and the next
regular build `<latest>.1` or a later date sorts after the rollback). Devices then "update"
forwards to V's content through the usual path: verify, install into the other slot, trial
boot, commit or roll back. See docs/rollouts.md.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from signing.errors import PublishError
from signing.keys import default_storage
from signing.repo import PublishedRelease, list_releases, publish_release, target_storage_name
from signing.storage import Storage
from wire.versions import InvalidVersionError, Version

__all__ = ["republish_as_rollback", "rollback_version"]


def rollback_version(latest: str, to_version: str) -> str:
    """The version of a re-signed `to_version` that sorts after `latest`."""
    candidate = f"{latest}-rollback-to-{to_version}"
    try:
        ordered = Version(candidate) > Version(latest)
    except InvalidVersionError as exc:
        raise PublishError(f"cannot name the rollback release: {exc}") from None
    if not ordered:  # pragma: no cover - a longer version always sorts after its prefix
        raise PublishError(f"{candidate} would not sort after {latest}")
    return candidate


def republish_as_rollback(
    repo_dir: Path,
    *,
    to_version: str,
    channel: str,
    model: str,
    storage: Storage | None = None,
    passphrase: str | None = None,
) -> PublishedRelease:
    """Sign the image of `to_version` (read back from the repository's storage, hash checked)
    as a new release after the latest one of `channel`/`model`, and make it live."""
    store = storage if storage is not None else default_storage(repo_dir)
    releases = [
        r for r in list_releases(repo_dir, store) if r.channel == channel and r.model == model
    ]
    if not releases:
        raise PublishError(f"nothing is published for {channel}/{model}")
    old = next((r for r in releases if r.version == to_version), None)
    if old is None:
        raise PublishError(f"{to_version} was never published for {channel}/{model}")
    latest = max(releases, key=lambda r: r.release_counter)
    if latest.version == to_version:
        raise PublishError(f"{to_version} is already the latest release of {channel}/{model}")
    data = store.get_bytes(target_storage_name(old.target_path, old.sha256))
    if data is None or hashlib.sha256(data).hexdigest() != old.sha256 or len(data) != old.length:
        raise PublishError(f"the stored image of {to_version} is missing or does not match")
    version = rollback_version(latest.version, to_version)
    filename = old.target_path.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(prefix="ota-rollback-") as tmp:
        image = Path(tmp) / filename
        image.write_bytes(data)
        return publish_release(
            repo_dir,
            image,
            version=version,
            channel=channel,
            model=model,
            notes=f"roll back to {to_version} (the image of {to_version}, signed as {version})",
            storage=store,
            passphrase=passphrase,
            filename=filename,
        )
