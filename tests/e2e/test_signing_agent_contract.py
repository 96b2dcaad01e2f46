"""The contract with the device: what `signing` publishes, the agent's TUF client accepts."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest

from agent.errors import VerificationError
from agent.tuf_client import TufClient, check_target
from signing.keys import init_keys
from signing.repo import publish_release
from signing.testing import serve_directory, write_image
from wire import FailureReason


def test_agent_tuf_client_accepts_a_published_release(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    trusted = init_keys(repo)
    image = write_image(tmp_path / "rom.img", 300_000, seed=5)
    release = publish_release(
        repo, image, version="2026.48", channel="stable", model="rpi4", chunk_size=64 * 1024
    )
    with serve_directory(repo / "repository") as url:
        client = TufClient(
            tmp_path / "device",
            f"{url}/metadata/",
            f"{url}/targets/",
            bootstrap_root=trusted.read_bytes(),
        )
        info = client.get_target(release.target_path)
        with urllib.request.urlopen(client.target_url(info), timeout=10) as response:
            data = response.read()

    assert data == image.read_bytes()
    assert (info.version, info.model, info.hardware_ids) == ("2026.48", "rpi4", ("rpi4",))
    assert info.chunk_size == 64 * 1024
    assert info.chunk_sha256[0] == hashlib.sha256(data[: 64 * 1024]).hexdigest()
    check_target(info, model="rpi4", channel="stable", current_version="2026.47", slot_size=1 << 20)
    with pytest.raises(VerificationError) as wrong_model:
        check_target(
            info, model="pixel", channel="stable", current_version="2026.47", slot_size=1 << 20
        )
    assert wrong_model.value.reason is FailureReason.WRONG_MODEL
    assert info.delegated_by == "stable"  # signing/ delegates each channel to its own role
    with pytest.raises(VerificationError) as wrong_channel:
        check_target(info, model="rpi4", channel="preview", current_version="1", slot_size=1 << 20)
    assert wrong_channel.value.reason is FailureReason.WRONG_CHANNEL
