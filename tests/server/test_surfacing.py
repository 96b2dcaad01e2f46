"""The pure grouping and ranking of "what surfaces first" (server.surfacing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from server.surfacing import (
    SIMILARITY_THRESHOLD,
    GroupStats,
    agent_signature,
    best_group,
    group_texts,
    rank,
    score,
    similarity,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
VOCABULARY = ["camera", "wifi", "crash", "battery", "drains", "screen", "freezes", "the", "on"]
texts = st.text(max_size=80)
vocab_texts = st.lists(st.sampled_from(VOCABULARY), max_size=8).map(" ".join)
counts = st.integers(min_value=0, max_value=1_000_000)
ages = st.floats(min_value=-10.0, max_value=100_000.0, allow_nan=False)


@given(texts, texts)
def test_similarity_is_symmetric_and_bounded(a: str, b: str) -> None:
    assert similarity(a, b) == similarity(b, a)
    assert 0.0 <= similarity(a, b) <= 1.0


@given(texts, st.text(alphabet="abcdefgh XYZ,.!", max_size=40))
def test_a_text_is_fully_similar_to_itself_whatever_case_and_spacing(a: str, b: str) -> None:
    assert similarity(a, a) == 1.0
    assert similarity(a, "  " + a + "\n") == 1.0
    assert similarity(b, b.upper() + " !") == 1.0


@given(st.lists(st.one_of(texts, vocab_texts), max_size=25), st.data())
def test_identical_texts_always_end_in_one_group(pool: list[str], data: st.DataObject) -> None:
    sequence = data.draw(st.lists(st.sampled_from(pool), max_size=40)) if pool else []
    assigned = group_texts(sequence)
    for i, text_i in enumerate(sequence):
        for j, text_j in enumerate(sequence):
            if text_i == text_j:
                assert assigned[i] == assigned[j]


@given(st.lists(vocab_texts, min_size=1, max_size=30))
def test_every_member_is_similar_to_another_member_of_its_group(sequence: list[str]) -> None:
    assigned = group_texts(sequence)
    for i, group in enumerate(assigned):
        earlier = [sequence[j] for j in range(i) if assigned[j] == group]
        if earlier:  # joined a group: similar enough to one of those already in it
            assert max(similarity(sequence[i], e) for e in earlier) >= SIMILARITY_THRESHOLD
        else:  # started one: not similar enough to anything earlier
            others = [sequence[j] for j in range(i)]
            assert all(similarity(sequence[i], o) < SIMILARITY_THRESHOLD for o in others)


def test_reports_of_one_problem_group_and_others_do_not() -> None:
    assert similarity("Camera app crashes when opening", "camera app crashed on open") == 1.0
    assert similarity("Battery drains fast overnight", "battery drain overnight") >= 0.5
    assert similarity("wifi drops", "bluetooth drops") < SIMILARITY_THRESHOLD
    assert group_texts(
        [
            "Camera app crashes when opening",
            "wifi disconnects every few minutes",
            "the camera crashes on opening",
            "WiFi keeps disconnecting every few minutes",
            "screen flickers at low brightness",
        ]
    ) == [0, 1, 0, 1, 2]


def test_best_group_prefers_the_most_similar_and_then_the_lowest_id() -> None:
    groups = {7: ["camera crash"], 3: ["camera crash on open"], 5: ["camera crash"]}
    assert best_group("camera crash", groups) == 5
    assert best_group("nothing alike", groups) is None


def test_agent_signature_is_reason_and_failing_check() -> None:
    assert agent_signature("health_check", {"failed_check": "wifi"}) == "health_check:wifi"
    assert agent_signature("download", {"error_code": "E42"}) == "download:E42"
    assert agent_signature("boot_failed", {}) == "boot_failed:"


@given(counts, counts, ages)
def test_score_grows_with_votes_and_devices_and_falls_with_age(
    devices: int, votes: int, age: float
) -> None:
    base = score(devices, votes, age)
    assert score(devices, votes + 1, age) > base
    assert score(devices + 1, votes, age) > base
    assert score(devices + 1, votes, age) > score(devices, votes + 1, age)
    assert score(devices, votes, max(age, 0.0) + 1.0) < base


@given(st.lists(st.tuples(counts, counts, ages), min_size=1, max_size=12), st.data())
def test_a_vote_or_a_device_never_moves_a_group_down(
    raw: list[tuple[int, int, float]], data: st.DataObject
) -> None:
    groups = [
        GroupStats(i, d, v, NOW - timedelta(hours=max(a, 0.0))) for i, (d, v, a) in enumerate(raw)
    ]
    target = data.draw(st.integers(0, len(groups) - 1))
    before = [g.group_id for g, _ in rank(groups, NOW)].index(target)
    g = groups[target]
    for bumped in (
        GroupStats(g.group_id, g.devices, g.votes + 1, g.last_seen),
        GroupStats(g.group_id, g.devices + 1, g.votes, g.last_seen),
    ):
        changed = [bumped if x.group_id == target else x for x in groups]
        after = [x.group_id for x, _ in rank(changed, NOW)].index(target)
        assert after <= before


def test_ranking_puts_wide_problems_first_and_old_ones_down() -> None:
    fresh_wide = GroupStats(1, devices=5, votes=0, last_seen=NOW)
    fresh_voted = GroupStats(2, devices=1, votes=3, last_seen=NOW)
    stale_wide = GroupStats(3, devices=5, votes=0, last_seen=NOW - timedelta(days=30))
    assert [g.group_id for g, _ in rank([stale_wide, fresh_voted, fresh_wide], NOW)] == [1, 2, 3]
