"""Signers through securesystemslib: keys from the environment (CI), AWS KMS (tested at the
request level with botocore's Stubber) and a PKCS#11 HSM (a real SoftHSM2 token)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tuf.api.metadata import Metadata

from signing.errors import KeysError
from signing.keys import default_storage, init_keys, key_paths
from signing.online import renew_online_roles
from signing.renew import renew_metadata
from signing.repo import publish_release
from signing.rotation import rotate_key
from signing.state import load_state
from signing.testing import TufClient, serve_directory, snapshot_tree, write_image

SOFTHSM_LIBS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
PIN = "123456"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    init_keys(repo)
    shutil.copy(repo / "root.json", tmp_path / "factory-root.json")
    image = write_image(tmp_path / "rom.img", 2000)
    publish_release(repo, image, version="1.0", channel="stable", model="rpi4")
    return repo


def _device_fetches(repo: Path, workdir: Path, target: str = "rpi4/stable/1.0/rom.img") -> None:
    factory = (repo.parent / "factory-root.json").read_bytes()
    with serve_directory(repo / "repository") as url:
        info, _ = TufClient(workdir, url, factory).fetch(target)
    assert info.path == target


# --------------------------------------------------------------------------- environment


def test_a_ci_job_signs_with_a_key_from_the_environment(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = key_paths(repo, "timestamp")[0]
    monkeypatch.setenv("OTA_KEY_TIMESTAMP", path.read_text())
    path.unlink()
    assert renew_metadata(repo) == ["metadata/timestamp.json"]

    monkeypatch.setenv("OTA_KEY_TIMESTAMP", key_paths(repo, "targets")[0].read_text())
    before = snapshot_tree(repo)
    with pytest.raises(KeysError, match=r"key \$OTA_KEY_TIMESTAMP .* is not a timestamp key"):
        renew_metadata(repo)
    monkeypatch.setenv("OTA_KEY_TIMESTAMP", "not a pem")
    with pytest.raises(KeysError, match=r"cannot load key \$OTA_KEY_TIMESTAMP"):
        renew_metadata(repo)
    assert snapshot_tree(repo) == before


# --------------------------------------------------------------------------- AWS KMS


class FakeKms:
    """A botocore KMS client behind a Stubber: each Sign request is checked against what
    AWSSigner must send, and answered with a signature made locally over the digest."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        session = botocore.session.get_session()
        self.client = session.create_client(
            "kms",
            region_name="eu-west-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        self.stub = Stubber(self.client)
        self.client.meta.events.register("provide-client-params.kms.Sign", self._answer)
        self.signed = 0

    def expect_import(self, key_id: str) -> None:
        der = self.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        response = {"KeyId": key_id, "PublicKey": der, "SigningAlgorithms": ["ECDSA_SHA_256"]}
        self.stub.add_response("get_public_key", response, {"KeyId": key_id})

    def _answer(self, params: dict[str, Any], **_: Any) -> None:
        assert params["MessageType"] == "DIGEST"
        assert params["SigningAlgorithm"] == "ECDSA_SHA_256"
        assert len(params["Message"]) == 32
        signature = self.key.sign(params["Message"], ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        expected = {
            "KeyId": params["KeyId"],
            "Message": params["Message"],
            "MessageType": "DIGEST",
            "SigningAlgorithm": "ECDSA_SHA_256",
        }
        self.stub.add_response("sign", {"Signature": signature, "KeyId": params["KeyId"]}, expected)
        self.signed += 1


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKms]:
    fake = FakeKms()
    real_client = boto3.client

    def client(service: str, *args: Any, **kwargs: Any) -> Any:
        return fake.client if service == "kms" else real_client(service, *args, **kwargs)

    monkeypatch.setattr(boto3, "client", client)
    with fake.stub:
        yield fake
    fake.stub.assert_no_pending_responses()


def test_the_online_timestamp_key_can_live_in_aws_kms(
    repo: Path, tmp_path: Path, kms: FakeKms
) -> None:
    kms.expect_import("alias/ota-timestamp")
    done = rotate_key(repo, "timestamp", to_uri="awskms:alias/ota-timestamp")
    assert done.key_file.name == "timestamp.key.json"
    assert not key_paths(repo, "timestamp")[0].exists()
    assert kms.signed == 1  # the new timestamp, signed through KMS
    server_keys = tmp_path / "server-keys"
    server_keys.mkdir()
    shutil.copy(done.key_file, server_keys / done.key_file.name)
    assert renew_online_roles(default_storage(repo), server_keys) == ["timestamp"]
    assert kms.signed == 2
    state = load_state(default_storage(repo))
    assert state.root.signed.get_key(done.added).keytype == "ecdsa"
    _device_fetches(repo, tmp_path / "device")


def test_a_kms_error_is_one_clear_line_and_changes_nothing(repo: Path, kms: FakeKms) -> None:
    kms.stub.add_client_error("get_public_key", "NotFoundException", "Alias not found")
    before = snapshot_tree(repo)
    with pytest.raises(KeysError, match=r"cannot import key awskms:alias/nope: .*Alias not found"):
        rotate_key(repo, "timestamp", to_uri="awskms:alias/nope")
    assert snapshot_tree(repo) == before


# --------------------------------------------------------------------------- SoftHSM2


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SoftHSM2 token `ota-root` holding an EC P-256 key with id 2."""
    lib = next((p for p in SOFTHSM_LIBS if Path(p).exists()), None)
    util = shutil.which("softhsm2-util")
    if lib is None or util is None:
        if os.environ.get("CI") == "true":
            pytest.fail("SoftHSM2 is missing but CI=true: .ci/run installs the softhsm2 package")
        pytest.skip("SoftHSM2 is not installed (Debian: apt-get install softhsm2)")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [util, "--init-token", "--free", "--label", "ota-root", "--pin", PIN, "--so-pin", "0000"],
        check=True,
        capture_output=True,
    )
    import pkcs11
    from pkcs11.util.ec import encode_named_curve_parameters

    token = pkcs11.lib(lib).get_token(token_label="ota-root")
    with token.open(rw=True, user_pin=PIN) as session:
        curve = {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}
        params = session.create_domain_parameters(pkcs11.KeyType.EC, curve, local=True)
        params.generate_keypair(store=True, id=b"\x02", label="ota-root")
    monkeypatch.setenv("PYKCS11LIB", lib)
    return lib


def test_the_offline_root_key_can_live_in_an_hsm(
    repo: Path, tmp_path: Path, softhsm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTA_HSM_PIN", raising=False)
    before = snapshot_tree(repo)
    with pytest.raises(KeysError, match="set OTA_HSM_PIN"):
        rotate_key(repo, "root", to_uri="hsm:2?label=ota-root")
    assert snapshot_tree(repo) == before

    monkeypatch.setenv("OTA_HSM_PIN", PIN)
    moved = rotate_key(repo, "root", to_uri="hsm:2?label=ota-root")  # root 2: file key + HSM
    assert moved.key_file.name == "root.key.json"
    rotate_key(repo, "timestamp")  # root 3: signed by the HSM alone
    root3: Metadata[Any] = Metadata.from_bytes(
        (repo / "repository/metadata/3.root.json").read_bytes()
    )
    assert list(root3.signatures) == [moved.added]
    assert root3.signed.get_key(moved.added).keytype == "ecdsa"
    _device_fetches(repo, tmp_path / "device")  # a device from the factory follows the chain
