"""Listings that one stored row can never break.

What the database holds may be older or odder than today's code expects: a state an enum no
longer knows, a JSON value of another shape, a float that is not finite. A listing builds each
row's view on its own; a row whose view cannot be built is logged and left out, so the rest of
the fleet, the releases or the rollouts stay visible."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

Row = TypeVar("Row")
View = TypeVar("View")


def each_view(rows: Iterable[Row], view: Callable[[Row], View], what: str) -> list[View]:
    views = []
    for row in rows:
        try:
            views.append(view(row))
        except (ValueError, TypeError, KeyError) as exc:  # pydantic's ValidationError too
            log.warning("a stored %s cannot be shown and is left out: %s", what, exc)
    return views


def as_object(stored: Any) -> dict[str, Any]:
    """A stored JSON object as an object; anything else (a list, a string) wrapped in one."""
    return stored if isinstance(stored, dict) else {"value": stored}


def finite_or_zero(stored: float | None) -> float:
    return stored if stored is not None and math.isfinite(stored) else 0.0
