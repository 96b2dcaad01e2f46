"""The bounds of every field the contract carries, and the checks that keep them.

A value from outside (a device's report, a poll answer, a request body) is checked here before
anything stores or uses it: integers fit a 64-bit column and their meaning, floats are finite,
text fits its column and holds no NUL or lone surrogate (PostgreSQL refuses both, JSON cannot
encode the second), JSON objects are small and shallow, paths stay inside their folder. Each
check raises `ProtocolError` naming the field and why; the server's pydantic types
(`server.input_bounds`) use the same limits.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from wire.errors import ProtocolError

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

MAX_NAME_CHARS: Final = 128  # device ids, models, channels, versions (String(128) columns)
MAX_SHORT_CHARS: Final = 32  # slots, states, reasons, command ids (String(32) columns)
MAX_PATH_CHARS: Final = 1024  # a target path (String(1024))
MAX_TEXT_CHARS: Final = 4000  # free text: notes, reasons, feedback
MAX_JSON_BYTES: Final = 16 * 1024  # a report's detail, a command's args, as compact JSON
MAX_JSON_DEPTH: Final = 8  # nesting of objects and lists inside them
MAX_SEQ_AHEAD: Final = 10_000  # how far past its last report a device's next seq may jump
MAX_EPOCH_S: Final = 4_102_444_800.0  # 2100-01-01: a device clock beyond is wrong, not late


def text(value: Any, field: str, max_chars: int, *, min_chars: int = 0) -> str:
    """A string of at most `max_chars` characters, without NUL or lone surrogates."""
    if not isinstance(value, str):
        raise ProtocolError(f"{field}: must be a string")
    if not min_chars <= len(value) <= max_chars:
        raise ProtocolError(f"{field}: must be {min_chars}..{max_chars} characters long")
    return clean_text(value, field)


def clean_text(value: str, field: str) -> str:
    if "\x00" in value:
        raise ProtocolError(f"{field}: must not contain NUL characters")
    if any("\ud800" <= char <= "\udfff" for char in value):
        raise ProtocolError(f"{field}: must not contain lone surrogates")
    return value


def integer(value: Any, field: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """An int (not a bool) within low..high (both within 64 bits)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{field}: must be an integer")
    if not low <= value <= high:
        raise ProtocolError(f"{field}: must be within {low}..{high}")
    return value


def number(value: Any, field: str, low: float, high: float) -> float:
    """A finite int or float within low..high, as a float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ProtocolError(f"{field}: must be a number")
    if not (math.isfinite(value) and low <= value <= high):
        raise ProtocolError(f"{field}: must be a finite number within {low}..{high}")
    return float(value)


def json_object(value: Any, field: str) -> dict[str, Any]:
    """A JSON object of at most MAX_JSON_BYTES (compact) and MAX_JSON_DEPTH levels, whose
    strings are clean and whose numbers are finite and 64-bit."""
    if not isinstance(value, dict):
        raise ProtocolError(f"{field}: must be an object")
    _check_json(value, field, depth=1)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_JSON_BYTES:
        raise ProtocolError(f"{field}: {size} bytes of JSON, at most {MAX_JSON_BYTES}")
    return value


def _check_json(value: Any, field: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ProtocolError(f"{field}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            text(key, f"{field} key", MAX_TEXT_CHARS)
            _check_json(item, field, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, field, depth + 1)
    elif isinstance(value, str):
        clean_text(value, field)
    elif isinstance(value, float):
        number(value, field, -math.inf, math.inf)
    elif isinstance(value, int) and not isinstance(value, bool):
        integer(value, field)
    elif value is not None and not isinstance(value, bool):
        raise ProtocolError(f"{field}: holds a {type(value).__name__}, not JSON")


def relative_path(value: Any, field: str) -> str:
    """A '/'-separated path inside its folder: no '..', '.', empty or absolute parts, no
    backslashes or drive letters."""
    path = text(value, field, MAX_PATH_CHARS, min_chars=1)
    parts = path.split("/")
    if "\\" in path or ":" in parts[0] or any(p in ("", ".", "..") for p in parts):
        raise ProtocolError(
            f"{field}: must be a relative path without '.', '..', empty parts or backslashes"
        )
    return path
