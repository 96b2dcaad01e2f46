"""TufClient against a real signed repository on a loopback server; check_target as pure code."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import DelegatedRole, Delegations, TargetFile, Targets

from agent.errors import InstallError, TransportError, VerificationError
from agent.installed import InstalledRelease
from agent.tuf_client import TargetInfo, TufClient, check_target, delegating_role
from lab.tufrepo import RepoServer, TufRepo, chunked_rom, device_client, rom_custom, serve
from wire import FailureReason

ROM = "pi4/stable/2026.48/rom.img"
ROM_DATA = bytes(range(256)) * 1000  # 256000 bytes
CHUNK = 64 * 1024


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    repo = TufRepo(tmp_path / "repo")
    repo.add_target(ROM, ROM_DATA, chunked_rom(ROM_DATA, CHUNK, version="2026.48", model="pi4"))
    repo.publish()
    return repo


@pytest.fixture
def server(repo: TufRepo) -> Iterator[RepoServer]:
    yield from serve(repo.base)


def new_client(
    tmp_path: Path, repo: TufRepo, server: RepoServer, bootstrap: bool = True
) -> TufClient:
    return device_client(tmp_path / "device" / "tuf", repo, server, bootstrap=bootstrap)


def test_refresh_then_get_target_reads_signed_fields(
    tmp_path: Path, repo: TufRepo, server: RepoServer
) -> None:
    client = new_client(tmp_path, repo, server)
    client.refresh()
    info = client.get_target(ROM)
    assert (info.path, info.length) == (ROM, len(ROM_DATA))
    assert info.version == "2026.48"
    assert info.model == "pi4"
    assert info.hardware_ids == ("pi4",)
    assert info.chunk_size == CHUNK
    assert len(info.chunk_sha256) == 4
    assert info.sha256 == repo.targets.signed.targets[ROM].hashes["sha256"]


def test_target_url_is_the_hash_prefixed_file(
    tmp_path: Path, repo: TufRepo, server: RepoServer
) -> None:
    client = new_client(tmp_path, repo, server)
    info = client.get_target(ROM)  # refreshes by itself
    stored = repo.target_file(ROM).relative_to(repo.targets_dir).as_posix()
    assert client.target_url(info) == f"{server.targets_url}{stored}"
    assert stored == f"pi4/stable/2026.48/{info.sha256}.rom.img"


def test_unknown_target_is_target_not_found(
    tmp_path: Path, repo: TufRepo, server: RepoServer
) -> None:
    client = new_client(tmp_path, repo, server)
    with pytest.raises(VerificationError) as caught:
        client.get_target("pi4/stable/2099.1/rom.img")
    assert caught.value.reason is FailureReason.TARGET_NOT_FOUND


def test_expired_timestamp_is_a_metadata_failure(
    tmp_path: Path, repo: TufRepo, server: RepoServer
) -> None:
    repo.expire_timestamp()
    with pytest.raises(VerificationError) as caught:
        new_client(tmp_path, repo, server).refresh()
    assert caught.value.reason is FailureReason.METADATA
    assert "Expired" in str(caught.value)


def test_metadata_signed_by_the_wrong_key_is_refused(
    tmp_path: Path, repo: TufRepo, server: RepoServer
) -> None:
    repo.signers["targets"] = repo.signers["snapshot"]  # not a key root trusts for targets
    repo.publish()
    with pytest.raises(VerificationError) as caught:
        new_client(tmp_path, repo, server).refresh()
    assert caught.value.reason is FailureReason.METADATA


def test_unreachable_repository_is_a_transport_error(
    tmp_path: Path, repo: TufRepo, server: RepoServer
) -> None:
    client = new_client(tmp_path, repo, server)
    server.close()
    with pytest.raises(TransportError):
        client.refresh()


def test_cache_corrupted_by_a_power_cut_recovers_with_the_bootstrap_root(
    tmp_path: Path, repo: TufRepo, server: RepoServer
) -> None:
    new_client(tmp_path, repo, server).refresh()
    cache = tmp_path / "device" / "tuf"
    (cache / "root.json").write_bytes(b'{"signed": {"_type": "ro')  # torn write
    (cache / "timestamp.json").write_bytes(b"")
    (cache / "snapshot.json").write_bytes(b"\0" * 100)

    client = new_client(tmp_path, repo, server)
    client.refresh()
    assert client.get_target(ROM).length == len(ROM_DATA)
    assert (cache / "root.json").read_bytes() == repo.root_bytes()


def test_without_bootstrap_a_corrupted_root_is_fatal(
    tmp_path: Path, repo: TufRepo, server: RepoServer
) -> None:
    new_client(tmp_path, repo, server).refresh()
    (tmp_path / "device" / "tuf" / "root.json").write_bytes(b"garbage")
    with pytest.raises(VerificationError) as caught:
        new_client(tmp_path, repo, server, bootstrap=False).refresh()
    assert caught.value.reason is FailureReason.METADATA


def test_a_new_release_is_seen_on_the_next_refresh(
    tmp_path: Path, repo: TufRepo, server: RepoServer
) -> None:
    client = new_client(tmp_path, repo, server)
    client.refresh()
    repo.add_target(
        "pi4/stable/2026.49/rom.img", b"next", rom_custom(version="2026.49", model="pi4")
    )
    repo.publish()
    client.refresh()
    assert client.get_target("pi4/stable/2026.49/rom.img").version == "2026.49"


# --------------------------------------------------------------------------- check_target


def rom_info(*, version: str = "2026.48", model: str = "pi4", **extra: object) -> TargetInfo:
    custom = {**rom_custom(version=version, model=model), **extra}
    return TargetInfo(
        path="x/rom.img", length=1000, sha256="0" * 64, custom=custom, delegated_by="targets"
    )


def test_check_target_accepts_a_newer_build_for_this_model() -> None:
    check_target(
        rom_info(), model="pi4", channel="stable", current_version="2026.47", slot_size=1000
    )
    check_target(rom_info(), model="pi4", channel="stable", current_version="", slot_size=1000)


def test_check_target_refuses_another_model() -> None:
    with pytest.raises(VerificationError) as caught:
        check_target(
            rom_info(), model="pi5", channel="stable", current_version="2026.47", slot_size=4096
        )
    assert caught.value.reason is FailureReason.WRONG_MODEL


def test_check_target_accepts_any_listed_hardware_id() -> None:
    info = rom_info(hardware_ids=["pi4", "pi4-8g"])
    check_target(info, model="pi4-8g", channel="stable", current_version="2026.47", slot_size=4096)


def test_check_target_without_model_fields_refuses_every_model() -> None:
    info = TargetInfo(path="x", length=1, sha256="0" * 64, custom={"version": "2"})
    with pytest.raises(VerificationError) as caught:
        check_target(info, model="pi4", channel="stable", current_version="1", slot_size=10)
    assert caught.value.reason is FailureReason.WRONG_MODEL


@pytest.mark.parametrize("current", ["2026.48", "2026.49", "2027.1"])
def test_check_target_refuses_the_same_or_an_older_version(current: str) -> None:
    with pytest.raises(VerificationError) as caught:
        check_target(
            rom_info(), model="pi4", channel="stable", current_version=current, slot_size=4096
        )
    assert caught.value.reason is FailureReason.DOWNGRADE


def test_check_target_refuses_a_target_without_a_valid_version() -> None:
    with pytest.raises(VerificationError) as caught:
        check_target(
            rom_info(version=""), model="pi4", channel="stable", current_version="1", slot_size=4096
        )
    assert caught.value.reason is FailureReason.DOWNGRADE


def test_check_target_refuses_an_image_larger_than_the_slot() -> None:
    with pytest.raises(InstallError) as caught:
        check_target(
            rom_info(), model="pi4", channel="stable", current_version="2026.47", slot_size=999
        )
    assert caught.value.reason is FailureReason.SLOT_TOO_SMALL


def test_check_target_refuses_a_build_signed_for_another_channel() -> None:
    info = rom_info()  # signed for stable
    with pytest.raises(VerificationError) as caught:
        check_target(info, model="pi4", channel="preview", current_version="1", slot_size=4096)
    assert caught.value.reason is FailureReason.WRONG_CHANNEL


@pytest.mark.parametrize("role", ["preview", "", "stable.bin-00"])
def test_check_target_refuses_a_build_not_delegated_by_the_channels_role(role: str) -> None:
    """The signed `custom` says stable, but the role it came through is not stable's (a
    leaked preview key writing "stable" into its own target), or is unknown."""
    info = dataclasses.replace(rom_info(), delegated_by=role)
    with pytest.raises(VerificationError) as caught:
        check_target(info, model="pi4", channel="stable", current_version="1", slot_size=4096)
    assert caught.value.reason is FailureReason.WRONG_CHANNEL


def test_check_target_accepts_the_channels_role_and_top_level_targets() -> None:
    for role in ("stable", "targets"):
        info = dataclasses.replace(rom_info(), delegated_by=role)
        check_target(info, model="pi4", channel="stable", current_version="1", slot_size=4096)


def counted(counter: int, *, channel: str = "stable", model: str = "pi4") -> TargetInfo:
    custom = {**rom_custom(version="2026.48", model=model), "release_counter": counter}
    custom["channel"] = channel
    return TargetInfo("x/rom.img", 1000, "0" * 64, custom, delegated_by=channel)


@pytest.mark.parametrize("counter", [0, 3, 7])
def test_check_target_refuses_a_release_counter_not_above_the_running_builds(
    counter: int,
) -> None:
    running = InstalledRelease(channel="stable", model="pi4", release_counter=7)
    with pytest.raises(VerificationError) as caught:
        check_target(
            counted(counter),
            model="pi4",
            channel="stable",
            current_version="2026.47",
            slot_size=4096,
            installed=running,
        )
    assert caught.value.reason is FailureReason.DOWNGRADE
    assert "release counter" in str(caught.value)


@pytest.mark.parametrize(
    "running",
    [
        None,  # no journal entry: a factory image, or a journal from before counters
        InstalledRelease(channel="stable", model="pi4", release_counter=0),  # signed without
        InstalledRelease(channel="preview", model="pi4", release_counter=9),  # another sequence
        InstalledRelease(channel="stable", model="pi4-8g", release_counter=9),
    ],
)
def test_check_target_compares_counters_only_within_one_known_sequence(
    running: InstalledRelease | None,
) -> None:
    check_target(
        counted(8),
        model="pi4",
        channel="stable",
        current_version="2026.47",
        slot_size=4096,
        installed=running,
    )


def top_targets(roles: list[tuple[str, list[str], bool]], signs: tuple[str, ...] = ()) -> Targets:
    delegated = {name: DelegatedRole(name, [], 1, term, paths) for name, paths, term in roles}
    top = Targets(delegations=Delegations(keys={}, roles=delegated) if roles else None)
    for path in signs:
        top.targets[path] = TargetFile(1, {"sha256": "0" * 64}, path)
    return top


STABLE = ("stable", ["*/stable/*/*"], True)
PREVIEW = ("preview", ["*/preview/*/*"], True)


@pytest.mark.parametrize(
    ("top", "role"),
    [
        (top_targets([STABLE, PREVIEW]), "stable"),
        (top_targets([PREVIEW, STABLE]), "stable"),
        (top_targets([("stable", ["*/stable/*/*"], False)]), "stable"),  # the only match
        (top_targets([STABLE], signs=(ROM,)), "targets"),  # top-level lists it: searched first
        (top_targets([("preview", ["*/*/*/*"], True), STABLE]), "preview"),  # a careless pattern
        (
            top_targets([("stable", ["*/*/*/*"], False), ("preview", ["*/*/*/*"], True)]),
            "",
        ),  # either
        (top_targets([PREVIEW]), ""),
        (top_targets([]), ""),
    ],
)
def test_delegating_role_names_the_role_the_search_must_have_used(top: Targets, role: str) -> None:
    assert delegating_role(top, ROM) == role


def test_get_target_says_which_channel_role_signed_it(tmp_path: Path) -> None:
    repo = TufRepo(tmp_path / "repo")
    repo.delegate("stable", ["*/stable/*/*"])
    repo.delegate("preview", ["*/preview/*/*"])
    preview_rom = "pi4/preview/2026.49/rom.img"
    repo.add_target(ROM, b"stable build", rom_custom(version="2026.48", model="pi4"), role="stable")
    repo.add_target(
        preview_rom, b"preview", rom_custom(version="2026.49", model="pi4"), role="preview"
    )
    repo.publish()
    with RepoServer(repo.base) as server:
        client = new_client(tmp_path, repo, server)
        assert client.get_target(ROM).delegated_by == "stable"
        assert client.get_target(preview_rom).delegated_by == "preview"
