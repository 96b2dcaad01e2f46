"""Key initialisation: files, modes, passphrases, root threshold, refusal to overwrite."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from signing.errors import KeysError
from signing.keys import ExpiryPolicy, init_keys, key_paths, load_signer, load_signers
from signing.storage import LocalStorage
from signing.testing import FaultyStorage, InjectedFaultError, snapshot_tree
from signing.tufmeta import utc_now


def test_init_writes_keys_and_version_one_of_everything(tmp_path: Path) -> None:
    trusted = init_keys(tmp_path / "repo")
    metadata = tmp_path / "repo" / "repository" / "metadata"
    names = sorted(p.name for p in metadata.iterdir())
    assert names == ["1.root.json", "1.snapshot.json", "1.targets.json", "timestamp.json"]
    assert trusted == tmp_path / "repo" / "root.json"
    assert trusted.read_bytes() == (metadata / "1.root.json").read_bytes()
    root = Metadata.from_bytes(trusted.read_bytes())
    assert root.signed.consistent_snapshot is True
    for role in ("root", "targets", "snapshot", "timestamp"):
        (path,) = key_paths(tmp_path / "repo", role)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert load_signer(path).public_key.keyid in root.signed.roles[role].keyids
    keys_dir = tmp_path / "repo" / "keys"
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700


def test_root_threshold_and_several_root_keys(tmp_path: Path) -> None:
    trusted = init_keys(tmp_path, root_keys=3, root_threshold=2)
    root = Metadata.from_bytes(trusted.read_bytes())
    assert root.signed.roles["root"].threshold == 2
    assert len(root.signed.roles["root"].keyids) == 3
    assert len(root.signatures) == 3
    signers = load_signers(tmp_path, "root", root.signed)
    assert sorted(s.public_key.keyid for s in signers) == sorted(root.signed.roles["root"].keyids)
    root.verify_delegate("root", root)


@pytest.mark.parametrize(("threshold", "keys"), [(0, 1), (3, 2)])
def test_impossible_root_threshold_is_refused(tmp_path: Path, threshold: int, keys: int) -> None:
    with pytest.raises(KeysError, match="threshold"):
        init_keys(tmp_path / "repo", root_threshold=threshold, root_keys=keys)
    assert not (tmp_path / "repo").exists()


def test_encrypted_keys_load_only_with_the_passphrase(tmp_path: Path) -> None:
    init_keys(tmp_path, passphrase="correct horse")
    (path,) = key_paths(tmp_path, "targets")
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(KeysError, match="encrypted: set OTA_KEY_PASSPHRASE"):
        load_signer(path)
    with pytest.raises(KeysError, match="wrong passphrase"):
        load_signer(path, "battery staple")
    assert load_signer(path, "correct horse").public_key.keytype == "ed25519"


def test_a_key_from_another_repository_is_refused(tmp_path: Path) -> None:
    init_keys(tmp_path / "a")
    trusted_b = init_keys(tmp_path / "b")
    root_b = Metadata.from_bytes(trusted_b.read_bytes()).signed
    with pytest.raises(KeysError, match="is not a targets key of root version 1"):
        load_signers(tmp_path / "a", "targets", root_b)


def test_second_init_refuses_and_changes_nothing(tmp_path: Path) -> None:
    init_keys(tmp_path / "repo")
    before = snapshot_tree(tmp_path)
    with pytest.raises(KeysError, match="already exist"):
        init_keys(tmp_path / "repo")
    assert snapshot_tree(tmp_path) == before


def test_init_refuses_a_storage_that_already_holds_a_repository(tmp_path: Path) -> None:
    shared = LocalStorage(tmp_path / "shared")
    init_keys(tmp_path / "first", storage=shared)
    before = snapshot_tree(tmp_path / "shared")
    with pytest.raises(KeysError, match=r"1\.root\.json"):
        init_keys(tmp_path / "second", storage=shared)
    assert snapshot_tree(tmp_path / "shared") == before
    assert not (tmp_path / "second" / "keys").exists()


def test_expiry_policy_is_applied_per_role(tmp_path: Path) -> None:
    policy = ExpiryPolicy(root=30, targets=20, snapshot=3, timestamp=2)
    init_keys(tmp_path, expiry=policy)
    metadata = tmp_path / "repository" / "metadata"
    now = utc_now()
    for name, days in [("1.root", 30), ("1.targets", 20), ("1.snapshot", 3), ("timestamp", 2)]:
        signed = json.loads((metadata / f"{name}.json").read_bytes())["signed"]
        expires = Metadata.from_bytes((metadata / f"{name}.json").read_bytes()).signed.expires
        assert abs((expires - now).total_seconds() - days * 86400) < 120, signed["_type"]
    with pytest.raises(ValueError, match="at least one day"):
        ExpiryPolicy(timestamp=0)


@pytest.mark.parametrize("allowed", range(4))
def test_init_that_fails_half_way_leaves_no_keys_and_can_be_retried(
    tmp_path: Path, allowed: int
) -> None:
    storage = LocalStorage(tmp_path / "repo" / "repository")
    with pytest.raises(InjectedFaultError):
        init_keys(tmp_path / "repo", storage=FaultyStorage(storage, allowed_writes=allowed))
    assert not (tmp_path / "repo" / "keys").exists()
    assert not (tmp_path / "repo" / "root.json").exists()
    assert [p.name for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")] == []
    trusted = init_keys(tmp_path / "repo")
    assert trusted.read_bytes() == storage.get_bytes("metadata/1.root.json")
