"""Android OTA packages: where update_engine finds the payload, signed with the target.

An A/B OTA package made by AOSP's `ota_from_target_files` is a zip holding `payload.bin`,
stored uncompressed so update_engine can read it in place, and `payload_properties.txt`,
the headers update_engine checks it against (FILE_HASH, FILE_SIZE, METADATA_HASH,
METADATA_SIZE). Publishing such a package signs the payload's byte range and those lines
into the target (`wire.AndroidPayload`), after checking they describe the payload inside.
Any other image is not an Android package and gets no such field.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zipfile
from pathlib import Path

from signing.errors import PublishError
from wire import AndroidPayload, ProtocolError

PAYLOAD = "payload.bin"
PROPERTIES = "payload_properties.txt"
LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra length
LOCAL_SIGNATURE = b"PK\x03\x04"
MAX_PROPERTIES_BYTES = 4096


def android_payload(image: Path) -> AndroidPayload | None:
    """The payload of the Android OTA package `image`; None when it is not one. A package
    whose payload cannot be read in place, or whose properties do not match it, raises
    PublishError."""
    try:
        if not zipfile.is_zipfile(image):
            return None
        with zipfile.ZipFile(image) as package:
            names = set(package.namelist())
            if not {PAYLOAD, PROPERTIES} <= names:
                return None
            info = package.getinfo(PAYLOAD)
            properties = package.read(PROPERTIES)[:MAX_PROPERTIES_BYTES].decode().splitlines()
        offset = _data_offset(image, info)
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise PublishError(f"cannot read the Android OTA package {image}: {exc}") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise PublishError(
            f"{image}: {PAYLOAD} is compressed; update_engine reads it in place "
            "(build the package with ota_from_target_files)"
        )
    lines = tuple(line.strip() for line in properties if line.strip())
    try:
        payload = AndroidPayload(offset=offset, size=info.file_size, properties=lines)
    except ProtocolError as exc:
        raise PublishError(f"{image}: {PROPERTIES}: {exc}") from None
    _check_file_hash(image, payload)
    return payload


def _data_offset(image: Path, info: zipfile.ZipInfo) -> int:
    """Where the member's bytes begin: after its local header, whose extra field may differ
    from the central directory's."""
    with image.open("rb") as package:
        package.seek(info.header_offset)
        header = package.read(LOCAL_HEADER.size)
    if len(header) != LOCAL_HEADER.size:
        raise zipfile.BadZipFile(f"{PAYLOAD}: truncated local header")
    signature, name_length, extra_length = LOCAL_HEADER.unpack(header)
    if signature != LOCAL_SIGNATURE:
        raise zipfile.BadZipFile(f"{PAYLOAD}: bad local header")
    return int(info.header_offset + LOCAL_HEADER.size + name_length + extra_length)


def _check_file_hash(image: Path, payload: AndroidPayload) -> None:
    digest = hashlib.sha256()
    with image.open("rb") as package:
        package.seek(payload.offset)
        left = payload.size
        while left > 0:
            piece = package.read(min(left, 1024 * 1024))
            if not piece:
                raise PublishError(f"{image}: {PAYLOAD} ends before its size")
            digest.update(piece)
            left -= len(piece)
    actual = base64.b64encode(digest.digest()).decode()
    signed = dict(line.split("=", 1) for line in payload.properties)["FILE_HASH"]
    if signed != actual:
        raise PublishError(
            f"{image}: {PROPERTIES} says FILE_HASH={signed}, {PAYLOAD} hashes to {actual}; "
            "rebuild the package"
        )
