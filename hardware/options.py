"""Reading a backend's options (the agent config's [slot] table) with clear errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hardware.bootcontrol import BootControlError


def required_str(options: Mapping[str, Any], key: str, backend: str) -> str:
    value = options.get(key)
    if not isinstance(value, str) or not value:
        raise BootControlError(f"boot backend {backend!r} needs option {key!r} (a string)")
    return value


def optional_str(options: Mapping[str, Any], key: str, default: str) -> str:
    value = options.get(key, default)
    if not isinstance(value, str):
        raise BootControlError(f"option {key!r} must be a string, not {type(value).__name__}")
    return value


def optional_int(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BootControlError(f"option {key!r} must be an integer, not {type(value).__name__}")
    return value


def optional_path(options: Mapping[str, Any], key: str, default: str) -> Path:
    return Path(optional_str(options, key, default))


def command_option(options: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
    """A command as a list of words (a string is split on whitespace)."""
    value = options.get(key, default)
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not value or not all(isinstance(w, str) for w in value):
        raise BootControlError(f"option {key!r} must be a command (list of strings)")
    return list(value)
