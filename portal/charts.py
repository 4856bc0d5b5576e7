"""Bar charts as geometry for an inline SVG: the server draws them, no script runs in the browser.

The template ``charts/bar.html`` turns a :class:`BarChart` into ``<svg>`` elements
with presentation attributes only (the Content-Security-Policy forbids inline
styles); every chart is shown beside a table of the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 220
MARGIN_LEFT = 8
MARGIN_BOTTOM = 24
MARGIN_TOP = 16
BARS_MAX = 400
BAR_WIDTH_MAX = 48


@dataclass(frozen=True)
class Bar:
    """One bar: its box in SVG units, its label and its value."""

    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True)
class BarChart:
    """Bars scaled to the largest value; labels shown under at most ``label_every``-th bar."""

    width: int
    height: int
    baseline_y: float
    bars: tuple[Bar, ...]
    value_max: int
    label_every: int


def bar_chart(points: Sequence[tuple[str, int]], width: int = WIDTH, height: int = HEIGHT) -> BarChart:
    """Scale ``(label, value)`` points (at most BARS_MAX; negative values drawn as 0) into bars.

    >>> c = bar_chart([("a", 10), ("b", 5)], width=208, height=140)
    >>> [(b.x, b.y, b.width, b.height) for b in c.bars]
    [(8.0, 16.0, 48, 100.0), (108.0, 66.0, 48, 50.0)]
    >>> bar_chart([]).bars
    ()
    """
    points = list(points)[:BARS_MAX]
    plot_w = width - MARGIN_LEFT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    baseline = float(height - MARGIN_BOTTOM)
    top = max([v for _, v in points] + [0])
    slot = plot_w / len(points) if points else 0.0
    bars = []
    for i, (label, value) in enumerate(points):
        h = plot_h * max(value, 0) / top if top > 0 else 0.0
        bars.append(Bar(x=round(MARGIN_LEFT + i * slot, 2), y=round(baseline - h, 2),
                        width=min(round(slot * 0.8, 2), BAR_WIDTH_MAX), height=round(h, 2), label=label, value=value))
    return BarChart(width, height, baseline, tuple(bars), top, max(1, -(-len(points) // 12)))
