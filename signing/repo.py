"""Publish a ROM build as a signed TUF target, and list what has been published.

A publish reads the live state back from storage (timestamp → snapshot → targets), checks
that the version goes up for its channel and model, hashes the image in one streaming pass,
then writes in this order: the target bytes, `<N+1>.targets.json`, `<M+1>.snapshot.json`,
and `timestamp.json` last. Until that last atomic write nothing a client reads has changed, so
a publish that fails or is killed at any point leaves the previous repository valid.
See docs/decisions/0014-signing-publish-order.md.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, TargetFile  # type: ignore[attr-defined]

from romdelta.make import MakeOptions
from signing.android import android_payload
from signing.delegation import DelegationPolicy, Plan, channel_role, plan_channel, plan_release
from signing.delta import DeltaSource, MadeDelta, make_delta
from signing.digest import ImageDigest, digest_image
from signing.errors import PublishError
from signing.keys import (
    KEYS_DIR,
    default_storage,
    generate_signers,
    load_role_signers,
    new_key_files,
)
from signing.progress import STEPS, NoProgress, Progress
from signing.renew import Signers, release_files, write_files
from signing.staging import staged_name, tally
from signing.state import RepoState, check_usable, delegated_names, load_state
from signing.storage import Storage
from signing.tufmeta import (
    TARGETS_DIR,
    ExpiryPolicy,
    rfc3339,
    serialize,
    sign_and_serialize,
    utc_now,
)
from wire import (
    AndroidPayload,
    DeltaCustom,
    ProtocolError,
    TargetCustom,
    is_rom_target,
    target_name,
)
from wire.versions import InvalidVersionError, Version

__all__ = [
    "PublishError",
    "PublishedDelta",
    "PublishedRelease",
    "list_deltas",
    "list_releases",
    "publish_release",
]

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedRelease:
    """What the server needs to know about a signed release (POST /api/v1/releases)."""

    version: str
    channel: str
    model: str
    target_path: str
    length: int
    sha256: str
    notes: str
    published_at: str
    release_counter: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Request:
    version: str
    channel: str
    model: str
    target_path: str
    notes: str
    hardware_ids: tuple[str, ...]


# --------------------------------------------------------------------------- publish


def publish_release(
    repo_dir: Path,
    image: Path,
    *,
    version: str,
    channel: str,
    model: str,
    notes: str = "",
    hardware_ids: list[str] | None = None,
    storage: Storage | None = None,
    passphrase: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    filename: str | None = None,
    expiry: ExpiryPolicy | None = None,
    stage: bool = False,
    delegation: DelegationPolicy | None = None,
    new_channel: bool = True,
    dry_run: bool = False,
    delta_from: Sequence[str] | None = None,
    delta_options: MakeOptions | None = None,
    progress: Progress | None = None,
) -> PublishedRelease:
    """Sign `image` as release `version` for `channel`/`model` and make it live.

    A channel the repository does not have yet gets its own role and key, unless
    `new_channel` is False (then PublishError). `dry_run` checks and hashes everything and
    returns the release that would be published, signing and writing nothing.

    With `stage`, or when the keys at hand do not meet the role's threshold, the signed
    proposal waits under `staged/` (invisible to devices) for `ota release sign`.

    Deltas (`signing.delta`) go live with the image: one from each version in `delta_from`
    (a build of this model; PublishError when it or its image is missing), or by default
    (None) from the newest release of this channel and model when its image is stored;
    `delta_from=[]` makes none, and neither does `stage`.

    `progress` is given a task for each long step (`signing.progress`): hashing the image
    (bytes), making each delta (one step), signing (one step) and uploading (bytes).

    Raises PublishError for bad input (image, version, names), KeysError, StorageError or
    RepositoryError otherwise; in every case the live repository is unchanged.
    """
    image = Path(image)
    progress = progress or NoProgress()
    request = _request(image, version, channel, model, notes, hardware_ids, filename)
    if chunk_size < 1:
        raise PublishError(f"chunk size must be positive, not {chunk_size}")
    before = _image_identity(image)
    store = storage if storage is not None else default_storage(repo_dir)
    policy = expiry or ExpiryPolicy()
    state = load_state(store)
    check_usable(state, utc_now(), policy.lifetime("timestamp"))
    counter = _next_release_counter(state, request)
    keys_dir = Path(repo_dir) / KEYS_DIR
    if not new_channel and not stage and channel_role(state, request.target_path) is None:
        raise PublishError(_unknown_channel(state, request.channel))
    if not stage:
        _online_signers(keys_dir, state, passphrase)  # fail before hashing the image
    sources = [] if stage else _delta_sources(state, store, request, delta_from)
    digest = _digest(image, chunk_size, progress)
    payload = android_payload(image)
    if payload is not None:
        sources = []  # update_engine applies whole payloads; a phone never fetches a delta
    target = _target_file(request, digest, rfc3339(utc_now()), counter, payload)
    if dry_run:
        return _release(target)
    with tempfile.TemporaryDirectory(prefix="ota-delta-") as workdir:
        deltas = []
        for source in sources:
            made = progress.task(f"delta from {source.version}", 1, STEPS)
            deltas.append(make_delta(store, source, image, target, Path(workdir), delta_options))
            made(1)
        _sign_and_go_live(
            _Publish(store, repo_dir, image, before, request, digest, target, deltas),
            state,
            policy,
            delegation or DelegationPolicy(),
            passphrase,
            stage=stage,
            progress=progress,
        )
    return _release(target)


@dataclass(frozen=True)
class _Publish:
    """What one publish stores: the image, its target and its deltas."""

    store: Storage
    repo_dir: Path
    image: Path
    identity: tuple[int, int]  # the image's size and mtime when the publish began
    request: _Request
    digest: ImageDigest
    target: TargetFile
    deltas: list[MadeDelta]


def _sign_and_go_live(
    publish: _Publish,
    state: RepoState,
    policy: ExpiryPolicy,
    delegation: DelegationPolicy,
    passphrase: str | None,
    *,
    stage: bool,
    progress: Progress,
) -> None:
    request, target, keys_dir = publish.request, publish.target, Path(publish.repo_dir) / KEYS_DIR
    new_keys: dict[str, list[CryptoSigner]] = {}
    if channel_role(state, target.path) is None and not stage:
        new_keys[request.channel] = generate_signers(1)
        plan = plan_channel(
            state,
            request.channel,
            [s.public_key for s in new_keys[request.channel]],
            1,
            policy.expires("targets"),
        )
    else:
        plan = Plan(state)
    for signed_target in [target, *(d.target for d in publish.deltas)]:
        plan_release(plan, signed_target, delegation, policy.expires("targets"), split=not stage)
    signing = progress.task("signing", 1, STEPS)
    if stage:
        signed = _sign_plan(plan, keys_dir, new_keys, passphrase)
        files = {staged_name(plan.role): serialize(signed[plan.role])}
    else:
        files = sign_plan_files(plan, keys_dir, new_keys, passphrase, policy)
    signing(1)
    store, image = publish.store, publish.image
    sizes = publish.digest.length + sum(d.target.length for d in publish.deltas)
    uploaded = progress.task("uploading", sizes)
    with new_key_files(keys_dir, new_keys, passphrase):
        name = target_storage_name(request.target_path, publish.digest.sha256)
        store.put_file(name, image, uploaded)
        for delta in publish.deltas:
            name = target_storage_name(delta.target.path, delta.sha256)
            store.put_file(name, delta.patch, uploaded)
        if _image_identity(image) != publish.identity:
            raise PublishError(f"{image} changed while it was being published; nothing went live")
        write_files(store, files)


def _delta_sources(
    state: RepoState, store: Storage, request: _Request, delta_from: Sequence[str] | None
) -> list[DeltaSource]:
    """The builds to make deltas from (see `publish_release`)."""
    if delta_from is None:
        previous = _releases_of(state, request.channel, request.model)
        if not previous:
            return []
        source = _delta_source(max(previous, key=lambda r: Version(r.version)))
        if store.exists(source.storage_name):
            return [source]
        log.warning("no delta from %s: its image is not in storage", source.version)
        return []
    return [_named_source(state, request, version) for version in dict.fromkeys(delta_from)]


def _named_source(state: RepoState, request: _Request, version: str) -> DeltaSource:
    """The published build `version` of this model (this channel's when several are)."""
    builds = [
        r
        for r in list_state_releases(state)
        if (r.version, r.model) == (version, request.model) and r.target_path
    ]
    if not builds:
        raise PublishError(f"cannot make a delta from {version}: no such {request.model} release")
    if version == request.version:
        raise PublishError(f"cannot make a delta from {version} to itself")
    best = next((r for r in builds if r.channel == request.channel), builds[0])
    return _delta_source(best)


def _delta_source(release: PublishedRelease) -> DeltaSource:
    return DeltaSource(
        version=release.version,
        target_path=release.target_path,
        sha256=release.sha256,
        length=release.length,
        storage_name=target_storage_name(release.target_path, release.sha256),
    )


def _unknown_channel(state: RepoState, channel: str) -> str:
    known = ", ".join(delegated_names(state.targets.signed)) or "none yet"
    return (
        f"channel {channel!r} does not exist yet (channels: {known}): create it with "
        f"`ota keys add-channel {channel}`, or publish with --new-channel"
    )


def _online_signers(keys_dir: Path, state: RepoState, passphrase: str | None) -> Signers:
    return {
        role: load_role_signers(keys_dir, role, state.root.signed, passphrase)
        for role in ("snapshot", "timestamp")
    }


def _sign_plan(
    plan: Plan, keys_dir: Path, new_keys: dict[str, list[CryptoSigner]], passphrase: str | None
) -> dict[str, Metadata[Any]]:
    """Each edited role signed by the keys at hand for it (new channel keys or key files)."""
    for name, md in plan.edits.items():
        owner = plan.key_role.get(name, name)
        signers = new_keys.get(owner) or load_role_signers(
            keys_dir, name, plan.delegators[name], passphrase, files=owner
        )
        sign_and_serialize(md, signers)
    return plan.edits


def sign_plan_files(
    plan: Plan,
    keys_dir: Path,
    new_keys: dict[str, list[CryptoSigner]],
    passphrase: str | None,
    policy: ExpiryPolicy,
) -> dict[str, bytes]:
    """Sign every role the plan edits, check each meets its threshold, and return all the
    files that make the plan live, in write order (timestamp.json last)."""
    signed = _sign_plan(plan, keys_dir, new_keys, passphrase)
    for name, md in signed.items():
        count, threshold = tally(plan.delegators[name], name, md)
        if count < threshold:
            raise PublishError(
                f"{name} needs {threshold} signatures and the keys at hand make {count}: "
                "publish with --stage, then collect the others with `ota release sign`"
            )
    online = _online_signers(keys_dir, plan.state, passphrase)
    edited = {name: serialize(md) for name, md in signed.items()}
    return release_files(plan.state, edited, online, policy)


def target_storage_name(target_path: str, sha256: str) -> str:
    """Consistent-snapshot location of a target: `targets/<dir>/<sha256>.<basename>`."""
    directory, _, basename = target_path.rpartition("/")
    prefix = f"{TARGETS_DIR}/{directory}/" if directory else f"{TARGETS_DIR}/"
    return f"{prefix}{sha256}.{basename}"


def _request(
    image: Path,
    version: str,
    channel: str,
    model: str,
    notes: str,
    hardware_ids: list[str] | None,
    filename: str | None,
) -> _Request:
    try:
        Version(version)
        path = target_name(model, channel, version, filename or image.name)
    except (InvalidVersionError, ProtocolError) as exc:
        raise PublishError(str(exc)) from None
    ids = tuple(hardware_ids) if hardware_ids else (model,)
    if not all(isinstance(h, str) and h for h in ids):
        raise PublishError("hardware ids must be non-empty strings")
    return _Request(version, channel, model, path, notes, ids)


def _releases_of(state: RepoState, channel: str, model: str) -> list[PublishedRelease]:
    return [r for r in list_state_releases(state) if (r.channel, r.model) == (channel, model)]


def _next_release_counter(state: RepoState, request: _Request) -> int:
    """Previous highest counter + 1; PublishError unless the version goes up."""
    previous = _releases_of(state, request.channel, request.model)
    if not previous:
        return 1
    newest = max(previous, key=lambda r: Version(r.version))
    if Version(request.version) <= Version(newest.version):
        raise PublishError(
            f"version {request.version} is not newer than {newest.version}, already published "
            f"for {request.model} on {request.channel}; versions only go up"
        )
    return max(r.release_counter for r in previous) + 1


def _image_identity(image: Path) -> tuple[int, int]:
    try:
        stat = image.stat()
    except FileNotFoundError:
        raise PublishError(f"image not found: {image}") from None
    except OSError as exc:
        raise PublishError(f"cannot read image {image}: {exc.strerror}") from exc
    if not image.is_file():
        raise PublishError(f"image is not a regular file: {image}")
    return stat.st_size, stat.st_mtime_ns


def _digest(image: Path, chunk_size: int, progress: Progress) -> ImageDigest:
    try:
        hashed = progress.task("hashing", image.stat().st_size)
        digest = digest_image(image, chunk_size, hashed)
    except OSError as exc:
        raise PublishError(f"cannot read image {image}: {exc.strerror}") from exc
    if digest.length == 0:
        raise PublishError(f"image is empty: {image}")
    return digest


def _target_file(
    request: _Request,
    digest: ImageDigest,
    published_at: str,
    counter: int,
    payload: AndroidPayload | None = None,
) -> TargetFile:
    custom = TargetCustom(
        version=request.version,
        channel=request.channel,
        model=request.model,
        hardware_ids=tuple(request.hardware_ids),
        notes=request.notes,
        published_at=published_at,
        release_counter=counter,
        chunk_size=digest.chunk_size,
        chunk_sha256=tuple(digest.chunk_sha256),
        android_payload=payload,
    ).to_custom()
    return TargetFile(
        length=digest.length,
        hashes={"sha256": digest.sha256},
        path=request.target_path,
        unrecognized_fields={"custom": custom},
    )


# --------------------------------------------------------------------------- list


def list_releases(repo_dir: Path, storage: Storage | None = None) -> list[PublishedRelease]:
    """Every release in the live targets metadata, by channel, model and release counter."""
    store = storage if storage is not None else default_storage(repo_dir)
    return list_state_releases(load_state(store))


def list_state_releases(state: RepoState) -> list[PublishedRelease]:
    roles = [state.targets, *(md for md, _ in state.delegated.values())]
    releases = [
        _release(target)
        for md in roles
        for target in md.signed.targets.values()
        if is_rom_target(target.custom)
    ]
    return sorted(releases, key=lambda r: (r.channel, r.model, r.release_counter))


@dataclass(frozen=True)
class PublishedDelta:
    path: str
    length: int
    sha256: str
    custom: DeltaCustom


def list_deltas(repo_dir: Path, storage: Storage | None = None) -> list[PublishedDelta]:
    """Every delta target in the live targets metadata."""
    store = storage if storage is not None else default_storage(repo_dir)
    state = load_state(store)
    roles = [state.targets, *(md for md, _ in state.delegated.values())]
    return [
        PublishedDelta(t.path, t.length, t.hashes["sha256"], DeltaCustom.from_custom(t.custom))
        for md in roles
        for t in md.signed.targets.values()
        if isinstance(t.custom, dict) and "delta" in t.custom
    ]


def _release(target: TargetFile) -> PublishedRelease:
    custom = TargetCustom.from_custom(target.custom)
    return PublishedRelease(
        version=custom.version,
        channel=custom.channel,
        model=custom.model,
        target_path=target.path,
        length=target.length,
        sha256=target.hashes["sha256"],
        notes=custom.notes,
        published_at=custom.published_at,
        release_counter=custom.release_counter,
    )
