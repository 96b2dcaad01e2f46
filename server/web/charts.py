"""Charts as plain geometry for server-side SVG (templates/charts.html draws them): no
JavaScript, no CDN, readable with scripts off. Pure functions over counts and time series."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

BAR_HEIGHT = 22.0
BAR_GAP = 6.0
LABEL_WIDTH = 120.0
BAR_AREA = 200.0
LINE_WIDTH = 640.0
LINE_HEIGHT = 220.0
MARGIN = 36.0
# Okabe-Ito: told apart with the common colour-vision deficiencies, dark enough on white
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#000000")


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    y: float
    width: float


@dataclass(frozen=True)
class BarChart:
    title: str
    bars: tuple[Bar, ...]
    width: float
    height: float
    label_width: float = LABEL_WIDTH


def bar_chart(title: str, counts: Mapping[str, int]) -> BarChart:
    """Horizontal bars, largest first, scaled to the largest count."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = max((value for _, value in ordered), default=0) or 1
    bars = tuple(
        Bar(label or "(none)", value, index * (BAR_HEIGHT + BAR_GAP), BAR_AREA * value / top)
        for index, (label, value) in enumerate(ordered)
    )
    height = max(len(bars), 1) * (BAR_HEIGHT + BAR_GAP)
    return BarChart(title, bars, LABEL_WIDTH + BAR_AREA + 60, height)


@dataclass(frozen=True)
class Line:
    name: str
    points: str  # SVG polyline points, "x,y x,y ..."
    colour: str
    last: int


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class LineChart:
    title: str
    lines: tuple[Line, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    markers: tuple[Tick, ...]  # vertical lines: a wave began
    width: float = LINE_WIDTH
    height: float = LINE_HEIGHT
    margin: float = MARGIN


class _Scale:
    def __init__(self, times: Sequence[datetime], top: int) -> None:
        self.start = times[0].timestamp() if times else 0.0
        span = (times[-1].timestamp() - self.start) if times else 0.0
        self.span = span or 1.0
        self.top = top or 1

    def x(self, moment: datetime) -> float:
        inner = LINE_WIDTH - 2 * MARGIN
        return round(MARGIN + inner * (moment.timestamp() - self.start) / self.span, 1)

    def y(self, value: float) -> float:
        inner = LINE_HEIGHT - 2 * MARGIN
        return round(LINE_HEIGHT - MARGIN - inner * value / self.top, 1)


def line_chart(
    title: str,
    times: Sequence[datetime],
    series: Mapping[str, Sequence[int]],
    markers: Sequence[tuple[datetime, str]] = (),
) -> LineChart:
    """Step-free polylines of each series over `times`, a y axis from 0 to the largest value."""
    top = max((max(values, default=0) for values in series.values()), default=0)
    scale = _Scale(times, top)
    lines = tuple(
        Line(
            name,
            " ".join(f"{scale.x(t)},{scale.y(v)}" for t, v in zip(times, values, strict=True)),
            PALETTE[index % len(PALETTE)],
            values[-1] if values else 0,
        )
        for index, (name, values) in enumerate(series.items())
    )
    y_ticks = tuple(Tick(scale.y(v), str(v)) for v in sorted({0, top // 2, top}))
    x_ticks = tuple(Tick(scale.x(t), t.strftime("%H:%M")) for t in (*times[:1], *times[-1:]))
    wave_marks = tuple(Tick(scale.x(at), label) for at, label in markers if times)
    return LineChart(title, lines, y_ticks, x_ticks, wave_marks)
