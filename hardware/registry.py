"""Pick the boot backend named in the agent's config, and say who this device is.

One backend per module behind one dispatcher, as RAUC's bootchooser does: the agent names a
backend (`[slot] backend = "uboot"`) and hands over the rest of the table as options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardware.bootcontrol import BootControl, BootControlError
from hardware.options import optional_path, optional_str, required_str

BackendFactory = Callable[[Mapping[str, Any]], BootControl]


def _open_sim(options: Mapping[str, Any]) -> BootControl:
    from hardware.sim import SimDevice

    return SimDevice(Path(required_str(options, "root", "sim")))


def _open_uboot(options: Mapping[str, Any]) -> BootControl:
    from hardware.uboot import UBootControl

    return UBootControl.from_options(options)


def _open_tryboot(options: Mapping[str, Any]) -> BootControl:
    from hardware.tryboot import TrybootControl

    return TrybootControl.from_options(options)


def _open_grub(options: Mapping[str, Any]) -> BootControl:
    from hardware.grub import GrubControl

    return GrubControl.from_options(options)


def _open_android(options: Mapping[str, Any]) -> BootControl:
    from hardware.android import AndroidControl

    return AndroidControl.from_options(options)


def _backends() -> dict[str, BackendFactory]:
    # Imported when chosen, so a device only loads the backend it runs.
    return {
        "sim": _open_sim,
        "uboot": _open_uboot,
        "tryboot": _open_tryboot,
        "grub": _open_grub,
        "android": _open_android,
    }


def backend_names() -> list[str]:
    return sorted(_backends())


def open_boot_control(backend: str, options: Mapping[str, Any]) -> BootControl:
    """The BootControl for `backend`, configured from `options`; BootControlError if unknown."""
    factory = _backends().get(backend)
    if factory is None:
        choices = ", ".join(backend_names())
        raise BootControlError(f"unknown boot backend {backend!r}; choose one of: {choices}")
    return factory(options)


# --------------------------------------------------------------------------- identity

MACHINE_ID_PATH = "/etc/machine-id"
MODEL_PATH = "/proc/device-tree/model"


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    model: str


def read_identity(options: Mapping[str, Any]) -> DeviceIdentity:
    """`device_id` and `model` from options, else /etc/machine-id and the device-tree model."""
    device_id = optional_str(options, "device_id", "") or _read_first_line(
        optional_path(options, "machine_id_path", MACHINE_ID_PATH), "device id"
    )
    model = optional_str(options, "model", "") or _read_first_line(
        optional_path(options, "model_path", MODEL_PATH), "model"
    )
    return DeviceIdentity(device_id=device_id, model=model)


def _read_first_line(path: Path, what: str) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise BootControlError(f"cannot read the {what} from {path}: {exc.strerror}") from None
    content = text.replace("\0", "").strip()
    if not content:
        raise BootControlError(f"{path} holds no {what}")
    return content.splitlines()[0].strip()
