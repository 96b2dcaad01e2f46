"""Publishing an Android OTA package signs where its payload is and its properties, checked
through python-tuf's ngclient as a phone would read them."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from lab.fleet import synthetic_android_ota
from signing.android import android_payload
from signing.errors import PublishError
from signing.keys import init_keys
from signing.repo import publish_release
from signing.testing import TufClient, serve_directory, write_image
from wire import TargetCustom


def package(tmp_path: Path, *, payload: bytes, properties: str, stored: bool = True) -> Path:
    path = tmp_path / "ota.zip"
    with zipfile.ZipFile(path, "w") as ota:
        ota.writestr("META-INF/com/android/metadata", "ota-type=AB\n")
        kind = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
        ota.writestr("payload.bin", payload, compress_type=kind)
        ota.writestr("payload_properties.txt", properties)
    return path


def properties_of(payload: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(payload).digest()).decode()
    return f"FILE_HASH={digest}\nFILE_SIZE={len(payload)}\n"


def test_the_payload_range_points_at_payload_bin(tmp_path: Path) -> None:
    ota = synthetic_android_ota(tmp_path / "ota.zip", 50_000)
    found = android_payload(ota)
    assert found is not None
    with zipfile.ZipFile(ota) as opened:
        inside = opened.read("payload.bin")
        lines = opened.read("payload_properties.txt").decode().split()
    data = ota.read_bytes()
    assert data[found.offset : found.offset + found.size] == inside
    assert found.properties == tuple(lines)
    assert [line.split("=")[0] for line in lines] == [
        "FILE_HASH",
        "FILE_SIZE",
        "METADATA_HASH",
        "METADATA_SIZE",
    ]


def test_other_images_are_no_android_package(tmp_path: Path) -> None:
    assert android_payload(write_image(tmp_path / "rom.img", 4096)) is None
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as opened:
        opened.writestr("payload.bin", b"no properties beside it")
    assert android_payload(other_zip) is None


@pytest.mark.parametrize(
    ("stored", "properties", "says"),
    [
        (False, properties_of(b"payload" * 100), "compressed"),
        (True, properties_of(b"another payload"), "FILE_"),
        (True, properties_of(b"payload" * 100) + "POWERWASH=1\n", "POWERWASH"),
    ],
)
def test_a_package_whose_properties_do_not_fit_is_refused(
    tmp_path: Path, stored: bool, properties: str, says: str
) -> None:
    ota = package(tmp_path, payload=b"payload" * 100, properties=properties, stored=stored)
    with pytest.raises(PublishError, match=says):
        android_payload(ota)


def test_publish_signs_the_payload_fields(tmp_path: Path) -> None:
    init_keys(tmp_path / "repo")
    ota = synthetic_android_ota(tmp_path / "ota.zip", 70_000)
    release = publish_release(
        tmp_path / "repo", ota, version="1.0", channel="stable", model="phone"
    )
    with serve_directory(tmp_path / "repo" / "repository") as url:
        client = TufClient(tmp_path / "phone", url, (tmp_path / "repo" / "root.json").read_bytes())
        info, data = client.fetch(release.target_path)
    signed = TargetCustom.from_custom(info.custom).android_payload
    assert signed == android_payload(ota)
    assert signed is not None
    assert data[signed.offset : signed.offset + signed.size] == zipfile.ZipFile(ota).read(
        "payload.bin"
    )
