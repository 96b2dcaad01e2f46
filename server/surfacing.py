"""What surfaces first: pure grouping and ranking of problem reports (docs/testers.md).

Grouping
- Agent reports: one group per build and *signature* `<reason>:<check or code>`, where the
  check is `detail.failed_check` (health checks) or `detail.error_code` (anything else).
- Tester texts: token-set Jaccard similarity over normalised words. A text joins the group
  holding its most similar earlier text when that similarity is at least
  `SIMILARITY_THRESHOLD`; otherwise it starts a group. Words are lowercased runs of letters
  and digits, with a few stop words dropped and one common English suffix cut (-ing, -ed,
  -es, -s on words longer than four letters).

Ranking, per build (higher first):
    score = log2(DEVICE_WEIGHT * devices + votes + 1) - age_hours / HALF_LIFE_HOURS
where `devices` counts distinct affected devices, `votes` distinct testers' votes and
`age_hours` the time since the group was last reported: each HALF_LIFE_HOURS of silence
weighs as much as halving the evidence. (The log form orders exactly like
`weight * 0.5 ** (age / half-life)` but never underflows to 0.) Ties go to the lower id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

SIMILARITY_THRESHOLD: Final = 0.4
DEVICE_WEIGHT: Final = 2.0  # an affected device is evidence; a vote is an opinion
HALF_LIFE_HOURS: Final = 72.0
_STOP_TEXT: Final = (
    "a an and are as at be but by for from has have i in is it its my of on or so that the "
    "then this to was were when while with after before again very just"
)
STOP_WORDS: Final = frozenset(_STOP_TEXT.split())
_WORD = re.compile(r"[^\W_]+")
_SUFFIXES: Final = ("ing", "ed", "es", "s")


def _stem(word: str) -> str:
    if len(word) > 4:
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and not word.endswith("ss"):
                return word[: -len(suffix)]
    return word


def words(text: str) -> frozenset[str]:
    """The normalised word set of a text (stop words kept if nothing else is left)."""
    tokens = [_stem(t) for t in _WORD.findall(text.casefold())]
    meaningful = frozenset(t for t in tokens if t not in STOP_WORDS)
    return meaningful or frozenset(tokens)


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the word sets, in [0, 1]; two texts without words are equal."""
    wa, wb = words(a), words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def best_group(text: str, groups: Mapping[int, Sequence[str]]) -> int | None:
    """The id of the group with the text most similar to `text`, if similar enough."""
    best: tuple[float, int] | None = None
    for group_id in sorted(groups):
        score = max((similarity(text, member) for member in groups[group_id]), default=0.0)
        if score >= SIMILARITY_THRESHOLD and (best is None or score > best[0]):
            best = (score, group_id)
    return None if best is None else best[1]


def group_texts(texts: Sequence[str]) -> list[int]:
    """The group index of each text, texts taken in order as the server receives them."""
    groups: dict[int, list[str]] = {}
    assigned = []
    for text in texts:
        group_id = best_group(text, groups)
        if group_id is None:
            group_id = len(groups)
            groups[group_id] = []
        groups[group_id].append(text)
        assigned.append(group_id)
    return assigned


def agent_signature(reason: str, detail: Mapping[str, Any]) -> str:
    """What makes two failure reports of one build the same problem."""
    check = detail.get("failed_check") or detail.get("error_code") or ""
    return f"{reason}:{check}"[:256]


@dataclass(frozen=True)
class GroupStats:
    group_id: int
    devices: int
    votes: int
    last_seen: datetime


def score(devices: int, votes: int, age_hours: float) -> float:
    """The ranking score (module docstring); a group reported "in the future" counts as now."""
    weight = DEVICE_WEIGHT * devices + votes + 1
    return math.log2(weight) - max(age_hours, 0.0) / HALF_LIFE_HOURS


def rank(groups: Sequence[GroupStats], now: datetime) -> list[tuple[GroupStats, float]]:
    """Groups with their scores, the one to look at first first."""
    scored = [
        (g, score(g.devices, g.votes, (now - g.last_seen).total_seconds() / 3600)) for g in groups
    ]
    return sorted(scored, key=lambda pair: (-pair[1], pair[0].group_id))
