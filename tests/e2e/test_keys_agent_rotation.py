"""A real agent (runner + SimDevice + live server) keeps updating across key rotations:
a stolen timestamp key, and root rotations, without re-provisioning the device."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from agent.errors import VerificationError
from agent.runner import Agent
from lab.fleet import MIB, Backend, Board, running_backend
from signing.keys import default_storage, init_keys, key_paths, load_signer
from signing.rotation import rotate_key
from signing.state import load_state
from signing.tufmeta import metadata_name, sign_and_serialize

BOARD = Board(model="board", slot_size=4 * MIB, image_size=MIB, chunk_size=MIB)


def factory_agent(fleet: Backend, device_id: str) -> Agent:
    """A device provisioned with root version 1, as it left the factory."""
    provisioned = fleet.workdir / "factory-root.json"
    agent, _ = fleet.start_agent(device_id, trusted_root=provisioned, health_deadline_s=5.0)
    return agent


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Backend]:
    repo = tmp_path / "repo"
    init_keys(repo, root_keys=3, root_threshold=2)
    shutil.copy(repo / "root.json", tmp_path / "factory-root.json")
    with running_backend(tmp_path, BOARD) as backend:
        yield backend


def test_agent_survives_a_timestamp_key_compromise(fleet: Backend) -> None:
    agent = factory_agent(fleet, "dev-ts")
    fleet.publish("1.0")
    agent.poll_once()
    assert agent.current_version == "1.0"

    stolen = load_signer(key_paths(fleet.repo, "timestamp")[0])
    rotate_key(fleet.repo, "timestamp")  # the incident runbook: rotate, revoking the old key
    fleet.publish("2.0")
    agent.poll_once()
    assert agent.current_version == "2.0"

    live = fleet.repo / "repository" / metadata_name("timestamp")
    honest = live.read_bytes()
    forged: Metadata[Root] = Metadata.from_bytes(honest)
    forged.signed.version += 10  # the attacker's timestamp: newer, signed by the stolen key
    live.write_bytes(sign_and_serialize(forged, [stolen]))
    with pytest.raises(VerificationError, match="timestamp"):
        agent.parts.tuf.refresh()
    assert agent.current_version == "2.0"

    live.write_bytes(honest)  # the forged file is taken down
    fleet.publish("3.0")
    agent.poll_once()
    assert agent.current_version == "3.0"


def test_agent_follows_root_rotations_without_reprovisioning(fleet: Backend) -> None:
    agent = factory_agent(fleet, "dev-root")
    fleet.publish("1.0")
    agent.poll_once()
    assert agent.current_version == "1.0"

    root_keys = [load_signer(p) for p in key_paths(fleet.repo, "root", 3)]
    for signer in root_keys[:2]:  # two signers leave: both their root keys are replaced
        rotate_key(fleet.repo, "root", revoke=signer.public_key.keyid)
    rotate_key(fleet.repo, "targets")
    rotate_key(fleet.repo, "stable")
    assert load_state(default_storage(fleet.repo)).root.signed.version == 4
    fleet.publish("2.0")
    agent.poll_once()
    assert agent.current_version == "2.0"

    # the two revoked root keys together can no longer make a root the device accepts
    rogue: Metadata[Root] = Metadata.from_bytes(
        (fleet.repo / "repository" / metadata_name("root", 4)).read_bytes()
    )
    rogue.signed.version = 5
    for signer in root_keys[:2]:
        rogue.signed.revoke_key(rogue.signed.roles["root"].keyids[0], "root")
        rogue.signed.add_key(signer.public_key, "root")
    rogue_path = fleet.repo / "repository" / metadata_name("root", 5)
    rogue_path.write_bytes(sign_and_serialize(rogue, root_keys[:2]))
    with pytest.raises(VerificationError, match="root"):
        agent.parts.tuf.refresh()
    rogue_path.unlink()
    fleet.publish("3.0")
    agent.poll_once()
    assert agent.current_version == "3.0"
