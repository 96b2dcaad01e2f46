"""Choosing a boot backend by name, and reading the device's identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware.bootcontrol import BootControl, BootControlError, Slot
from hardware.registry import DeviceIdentity, backend_names, open_boot_control, read_identity
from hardware.sim import SimDevice


def test_sim_backend_opens_the_device_at_root(tmp_path: Path) -> None:
    SimDevice.provision(tmp_path, slot_size=4096)
    boot = open_boot_control("sim", {"root": str(tmp_path)})
    assert isinstance(boot, SimDevice)
    assert isinstance(boot, BootControl)
    assert boot.status().active is Slot.A


def test_sim_backend_needs_a_root() -> None:
    with pytest.raises(BootControlError, match="'root'"):
        open_boot_control("sim", {})


def test_unknown_backend_lists_the_choices() -> None:
    with pytest.raises(BootControlError, match="unknown boot backend 'lilo'") as caught:
        open_boot_control("lilo", {})
    for name in backend_names():
        assert name in str(caught.value)
    assert "sim" in backend_names()


def test_identity_from_options() -> None:
    identity = read_identity({"device_id": "phone-01", "model": "orange-9"})
    assert identity == DeviceIdentity("phone-01", "orange-9")


def test_identity_from_machine_id_and_device_tree(tmp_path: Path) -> None:
    (tmp_path / "machine-id").write_text("0123456789abcdef\n")
    (tmp_path / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    options = {
        "machine_id_path": str(tmp_path / "machine-id"),
        "model_path": str(tmp_path / "model"),
    }
    assert read_identity(options) == DeviceIdentity(
        "0123456789abcdef", "Raspberry Pi 4 Model B Rev 1.4"
    )


def test_identity_errors_say_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(BootControlError, match="no device id"):
        read_identity({"machine_id_path": str(tmp_path / "empty"), "model": "m"})
    with pytest.raises(BootControlError, match="cannot read the model"):
        read_identity({"device_id": "d", "model_path": str(tmp_path / "missing")})
    with pytest.raises(BootControlError, match="must be a string"):
        read_identity({"device_id": 7})
