"""The signed Android payload fields: bounded, and only the properties update_engine checks."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import AndroidPayload, ProtocolError, TargetCustom

HASH = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="
GOOD = ("FILE_HASH=" + HASH, "FILE_SIZE=100", "METADATA_HASH=" + HASH, "METADATA_SIZE=24")


def rom(**custom: Any) -> dict[str, Any]:
    return {"version": "1.0", "channel": "stable", "model": "phone", **custom}


def test_round_trip_through_the_targets_custom_fields() -> None:
    payload = AndroidPayload(offset=94, size=100, properties=GOOD)
    custom = TargetCustom("1.0", "stable", "phone", android_payload=payload).to_custom()
    assert custom["android_payload"] == {"offset": 94, "size": 100, "properties": list(GOOD)}
    assert TargetCustom.from_custom(custom).android_payload == payload


def test_a_target_without_it_is_no_android_package() -> None:
    assert TargetCustom.from_custom(rom()).android_payload is None


@pytest.mark.parametrize(
    "value",
    [
        "not an object",
        {"offset": -1, "size": 100, "properties": list(GOOD)},
        {"offset": 0, "size": 0, "properties": ["FILE_HASH=x", "FILE_SIZE=0"]},
        {"offset": 0, "size": 100, "properties": [*GOOD, "POWERWASH=1"]},  # not signed in
        {"offset": 0, "size": 100, "properties": [*GOOD, "SWITCH_SLOT_ON_REBOOT=1"]},
        {"offset": 0, "size": 100, "properties": [*GOOD, "FILE_SIZE=100"]},  # twice
        {"offset": 0, "size": 100, "properties": ["FILE_SIZE=100"]},  # no FILE_HASH
        {"offset": 0, "size": 99, "properties": list(GOOD)},  # FILE_SIZE says otherwise
        {"offset": 0, "size": 100, "properties": ["FILE_HASH=a b", "FILE_SIZE=100"]},
        {"offset": 0, "size": 100, "properties": ["FILE_HASH=a\nPOWERWASH=1", "FILE_SIZE=100"]},
        {"offset": 0, "size": 100, "properties": ["FILE_HASH=" + "a" * 129, "FILE_SIZE=100"]},
        {"offset": "0", "size": 100, "properties": list(GOOD)},
        {"size": 100, "properties": list(GOOD)},
    ],
)
def test_out_of_bounds_fields_are_refused(value: object) -> None:
    with pytest.raises(ProtocolError):
        TargetCustom.from_custom(rom(android_payload=value))


@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c, max_size=4)))
def test_any_json_either_parses_or_is_refused_cleanly(value: object) -> None:
    good: dict[str, object] = {"offset": 0, "size": 100, "properties": list(GOOD)}
    for field in good:
        with contextlib.suppress(ProtocolError):
            TargetCustom.from_custom(rom(android_payload={**good, field: value}))
