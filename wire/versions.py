"""Ordering of ROM version strings ("2026.48", "14.0.3", "V14.0.23.11.28.DEV").

Versions only go up per channel and model. A version is split on `.`, `-`, `_` and `+` and
each piece into runs of digits and letters; digit runs compare as numbers, letter runs as
lower-case text, and a number sorts after text at the same position ("1.0.a" < "1.0.1").
A version that is a prefix of another sorts first ("1.0" < "1.0.1").
"""

from __future__ import annotations

import re
from functools import total_ordering

_SPLIT = re.compile(r"[.\-_+]")
_RUNS = re.compile(r"\d+|[A-Za-z]+")
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_+]{0,63}")


class InvalidVersionError(ValueError):
    """Not a version string this project accepts."""


@total_ordering
class Version:
    __slots__ = ("_key", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not _VALID.fullmatch(text):
            raise InvalidVersionError(
                f"invalid version {text!r}: use letters, digits and . - _ + (at most 64)"
            )
        self.text = text
        key: list[tuple[int, int, str]] = []
        for piece in _SPLIT.split(text):
            for run in _RUNS.findall(piece):
                key.append((1, int(run), "") if run.isdigit() else (0, 0, run.lower()))
        self._key = tuple(key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key == other._key

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"Version({self.text!r})"

    def __str__(self) -> str:
        return self.text


def is_newer(candidate: str, current: str) -> bool:
    """True when `candidate` sorts strictly after `current` (an empty current is oldest)."""
    return not current or Version(candidate) > Version(current)
