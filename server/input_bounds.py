"""The constrained types every request model uses, with the limits of `wire.bounds`, and the
one 422 answer for a request that breaks them.

Every string has a maximum length that fits its column and holds no NUL or lone surrogate,
every integer fits 64 bits and its meaning, every float is finite and bounded, JSON objects are
small and shallow, dates lie in a sane range. A test walks the OpenAPI schema to keep it so.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Final

from fastapi import Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, Field

from wire import ProtocolError, bounds
from wire.bounds import INT64_MAX, MAX_NAME_CHARS, MAX_PATH_CHARS, MAX_SHORT_CHARS, MAX_TEXT_CHARS

EARLIEST_DATE: Final = date(2000, 1, 1)
LATEST_DATE: Final = date(2100, 1, 1)
MAX_DURATION_S: Final = 366 * 24 * 3600.0  # timeouts, soak times, lifetimes: at most a year
MAX_RATE_PER_MINUTE: Final = 1_000_000.0


def _clean(value: str) -> str:
    try:
        return bounds.clean_text(value, "text")
    except ProtocolError as exc:
        raise ValueError(str(exc).removeprefix("text: ")) from None


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    try:
        return bounds.json_object(value, "object")
    except ProtocolError as exc:
        raise ValueError(str(exc).removeprefix("object: ")) from None


def _sane_date(value: date) -> date:
    day = value.date() if isinstance(value, datetime) else value
    if not EARLIEST_DATE <= day < LATEST_DATE:
        raise ValueError(f"must lie between {EARLIEST_DATE} and {LATEST_DATE}")
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_Clean = AfterValidator(_clean)

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS), _Clean]
"""A version, model, channel, device id or token name (String(128) columns)."""
OptionalName = Annotated[str, Field(max_length=MAX_NAME_CHARS), _Clean]
ShortText = Annotated[str, Field(max_length=MAX_SHORT_CHARS * 2), _Clean]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS), _Clean]
"""Free text: notes, reasons, feedback."""
Secret = Annotated[str, Field(max_length=256), _Clean]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
RowId = Annotated[int, Field(ge=1, le=INT64_MAX)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Percentage = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)]
PerMinute = Annotated[float, Field(ge=0, le=MAX_RATE_PER_MINUTE, allow_inf_nan=False)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
SaneDate = Annotated[date, AfterValidator(_sane_date)]
SaneTime = Annotated[datetime, AfterValidator(_sane_date), AfterValidator(_utc)]

# path and query parameters
NameInPath = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS), _Clean]
NameInQuery = Annotated[str, Query(min_length=1, max_length=MAX_NAME_CHARS), _Clean]
ShortIdInPath = Annotated[str, Path(min_length=1, max_length=MAX_SHORT_CHARS), _Clean]
RowIdInPath = Annotated[int, Path(ge=1, le=INT64_MAX)]
FileInPath = Annotated[str, Path(min_length=1, max_length=255), _Clean]
FilePathInPath = Annotated[str, Path(min_length=1, max_length=MAX_PATH_CHARS), _Clean]


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 with each broken field's location and why, never echoing the input (which may
    be what cannot be encoded: a lone surrogate, a NaN)."""
    assert isinstance(exc, RequestValidationError)  # noqa: S101  # registered for it only
    problems = [
        {
            "loc": [_printable(str(part)) for part in error["loc"]],
            "msg": _printable(str(error["msg"])),
            "type": str(error["type"]),
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": problems}, status_code=422)


def _printable(value: str) -> str:
    """At most 200 characters that UTF-8 can encode (a lone surrogate becomes its escape)."""
    return value[:200].encode("utf-8", "backslashreplace").decode("utf-8")
