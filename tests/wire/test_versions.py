from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.versions import InvalidVersionError, Version, is_newer

parts = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=5)


@given(parts, parts)
def test_numeric_versions_order_like_integer_tuples(a: list[int], b: list[int]) -> None:
    va, vb = Version(".".join(map(str, a))), Version(".".join(map(str, b)))
    assert (va < vb) == (a < b)
    assert (va == vb) == (a == b)


@given(parts)
def test_bumping_any_component_is_newer(a: list[int]) -> None:
    base = ".".join(map(str, a))
    for i in range(len(a)):
        bumped = [*a[:i], a[i] + 1, *a[i + 1 :]]
        assert is_newer(".".join(map(str, bumped)), base)
    assert not is_newer(base, base)


@given(st.lists(parts, min_size=1, max_size=8))
def test_ordering_is_total_and_consistent(items: list[list[int]]) -> None:
    versions = sorted(Version(".".join(map(str, p))) for p in items)
    assert all(x <= y for x, y in itertools.pairwise(versions))


def test_weekly_rom_names() -> None:
    assert Version("2026.9") < Version("2026.10")
    assert Version("V14.0.23.11.28.DEV") < Version("V14.0.23.12.1.DEV")
    assert Version("1.0") < Version("1.0.1")
    assert Version("1.0.a") < Version("1.0.1")
    assert is_newer("1.0", "")


@pytest.mark.parametrize("bad", ["", " 1.0", "1.0/../x", "a" * 65, "-1", "1.0\n"])
def test_invalid_versions_are_refused(bad: str) -> None:
    with pytest.raises(InvalidVersionError):
        Version(bad)
