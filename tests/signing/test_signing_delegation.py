"""One delegated role per channel, with its own keys; hashed bins once a channel grows.

Checked with the agent's own TufClient (python-tuf's ngclient walks the delegations)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from tuf.api.metadata import Metadata, TargetFile
from typer.testing import CliRunner

from agent.errors import VerificationError
from agent.tuf_client import TufClient
from signing.cli import keys_app
from signing.delegation import DelegationPolicy
from signing.keys import default_storage, init_keys, key_paths, load_signer
from signing.renew import release_files, write_files
from signing.repo import list_releases, publish_release
from signing.state import load_state
from signing.testing import serve_directory, snapshot_tree, write_image
from signing.tufmeta import ExpiryPolicy, serialize
from wire import FailureReason


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    init_keys(tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture
def url(repo: Path) -> Iterator[str]:
    with serve_directory(repo / "repository") as base:
        yield base


def _publish(repo: Path, tmp_path: Path, version: str, channel: str, **kw: Any) -> Any:
    image = write_image(tmp_path / f"{channel}-{version}.img", 2000, seed=len(version))
    return publish_release(repo, image, version=version, channel=channel, model="rpi4", **kw)


def _client(repo: Path, url: str, workdir: Path) -> TufClient:
    return TufClient(
        workdir,
        f"{url}/metadata/",
        f"{url}/targets/",
        bootstrap_root=(repo / "root.json").read_bytes(),
    )


def _forge(repo: Path, role: str, signer_role: str, path: str, template: TargetFile) -> None:
    """What a holder of `signer_role`'s key (and, worst case, the online keys) can publish:
    a new version of `role` listing `path`, signed with `signer_role`'s key."""
    storage = default_storage(repo)
    state = load_state(storage)
    md: Metadata[Any] = Metadata.from_bytes(serialize(state.role(role)))
    md.signed.version += 1
    md.signed.targets[path] = TargetFile(
        template.length, template.hashes, path, template.unrecognized_fields
    )
    md.signatures.clear()
    md.sign(load_signer(key_paths(repo, signer_role)[0]))
    online = {r: [load_signer(key_paths(repo, r)[0])] for r in ("snapshot", "timestamp")}
    write_files(storage, release_files(state, {role: serialize(md)}, online, ExpiryPolicy()))


def test_each_channel_gets_its_own_role_and_key(repo: Path, tmp_path: Path, url: str) -> None:
    stable = _publish(repo, tmp_path, "1.0", "stable")
    preview = _publish(repo, tmp_path, "1.1", "preview")
    assert (repo / "keys/stable.pem").is_file()
    assert (repo / "keys/preview.pem").is_file()
    state = load_state(default_storage(repo))
    assert sorted(state.delegated) == ["preview", "stable"]
    assert state.targets.signed.targets == {}  # top-level targets signs no builds itself
    roles = state.targets.signed.delegations.roles
    assert roles["stable"].paths == ["*/stable/*/*"]
    assert roles["stable"].terminating
    assert roles["stable"].keyids != roles["preview"].keyids
    client = _client(repo, url, tmp_path / "device")
    assert client.get_target(stable.target_path).version == "1.0"
    assert client.get_target(preview.target_path).version == "1.1"
    assert [r.version for r in list_releases(repo)] == ["1.1", "1.0"]


def test_a_preview_key_cannot_sign_a_stable_build(repo: Path, tmp_path: Path, url: str) -> None:
    _publish(repo, tmp_path, "1.0", "stable")
    preview = _publish(repo, tmp_path, "1.1", "preview")
    template = load_state(default_storage(repo)).role("preview").signed.targets[preview.target_path]
    evil = "rpi4/stable/9.9/rom.img"
    _forge(repo, "preview", "preview", evil, template)  # listed in preview's own role
    with pytest.raises(VerificationError) as listed:
        _client(repo, url, tmp_path / "device").get_target(evil)
    assert listed.value.reason is FailureReason.TARGET_NOT_FOUND

    _forge(repo, "stable", "preview", evil, template)  # posing as the stable role
    with pytest.raises(VerificationError, match="stable"):
        _client(repo, url, tmp_path / "device-2").get_target(evil)


def test_a_channel_past_the_threshold_is_split_into_hashed_bins(
    repo: Path, tmp_path: Path, url: str
) -> None:
    policy = DelegationPolicy(bin_threshold=2, bin_bits=2)
    releases = [
        _publish(repo, tmp_path, v, "stable", delegation=policy, delta_from=[])
        for v in ("1.0", "1.1", "1.2")
    ]
    state = load_state(default_storage(repo))
    stable = state.role("stable").signed
    assert stable.targets == {}
    assert stable.delegations.succinct_roles.number_of_bins == 4
    bins = {n: md for n, (md, _) in state.delegated.items() if n.startswith("stable.bin-")}
    assert len(bins) == 4
    assert sum(len(md.signed.targets) for md in bins.values()) == 3
    client = _client(repo, url, tmp_path / "device")
    for release in releases:
        assert client.get_target(release.target_path).version == release.version

    before = {n: md.signed.version for n, md in bins.items()}
    newest = _publish(repo, tmp_path, "1.3", "stable", delegation=policy)
    after = load_state(default_storage(repo))
    changed = [n for n in bins if after.role(n).signed.version != before[n]]
    assert len(changed) == 1  # one small bin re-signed, not the channel's whole history
    assert after.role("stable").signed.version == stable.version
    assert _client(repo, url, tmp_path / "device").get_target(newest.target_path).version == "1.3"
    assert len(list_releases(repo)) == 4


def _keys_cli(*args: str) -> Any:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(keys_app, name="keys")
    return CliRunner().invoke(app, ["keys", *args])


def test_add_channel_and_its_bad_input(repo: Path) -> None:
    done = _keys_cli(
        "add-channel", "internal", "--repo", str(repo), "--keys", "2", "--threshold", "2"
    )
    assert done.exit_code == 0, done.output
    assert (repo / "keys/internal-1.pem").is_file()
    assert (repo / "keys/internal-2.pem").is_file()
    role = load_state(default_storage(repo)).targets.signed.delegations.roles["internal"]
    assert (role.threshold, len(role.keyids)) == (2, 2)
    before = snapshot_tree(repo)
    for args, message in [
        (("internal",), "channel internal already has its own role"),
        (("timestamp",), "invalid channel name"),
        (("a*b",), "invalid channel name"),
        (("x", "--keys", "1", "--threshold", "2"), "x threshold 2 must be between 1"),
    ]:
        result = _keys_cli("add-channel", *args, "--repo", str(repo))
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.strip().splitlines()
        assert message in line
    assert snapshot_tree(repo) == before
    assert json.loads((repo / "root.json").read_bytes())["signed"]["version"] == 1
