"""Bar charts drawn on the server as inline SVG, for totals rather than time series (the cost page): horizontal bars
with each value written beside its bar, so a number is read, not estimated."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

WIDTH, LABEL_W, VALUE_W, BAR_H, GROUP_GAP, TOP = 640, 200, 80, 14, 8, 22
PALETTE = ("#2563eb", "#d97706", "#16a34a", "#dc2626", "#7c3aed", "#0891b2")
LABEL_CHARS = 30


def bar_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]], *, unit: str = "",
              decimals: int = 1) -> Markup:
    """One group of bars per label, one bar per series (a legend above when there are several), each bar's value
    beside it; long labels are cut with the full text as a tooltip. Bars share one linear scale from zero."""
    names = list(series)
    group_h = BAR_H * max(len(names), 1) + GROUP_GAP
    legend_h = 16 if len(names) > 1 else 0
    height = TOP + legend_h + group_h * max(len(labels), 1) + 6
    parts = [f'<svg class="chart bar-chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg">', f'<text x="4" y="14" class="chart-title">{escape(title)}</text>']
    values = [v for s in series.values() for v in s if math.isfinite(v)]
    if not labels or not values:
        parts.append(f'<text x="{WIDTH / 2}" y="{height - 8}" text-anchor="middle" class="chart-empty">'
                     'nothing to show yet</text></svg>')
        return Markup("".join(parts))
    top = max(max(values), 0.0) or 1.0
    span = WIDTH - LABEL_W - VALUE_W
    if len(names) > 1:
        legend = " ".join(f'<tspan fill="{PALETTE[i % len(PALETTE)]}">■ {escape(n)}</tspan>'
                          for i, n in enumerate(names))
        parts.append(f'<text x="{LABEL_W}" y="{TOP + 10}" class="chart-legend">{legend}</text>')
    for g, label in enumerate(labels):
        y0 = TOP + legend_h + g * group_h
        short = label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"
        parts.append(f'<text x="{LABEL_W - 6}" y="{y0 + (group_h - GROUP_GAP) / 2 + 4:.1f}" text-anchor="end" '
                     f'class="chart-axis bar-label"><title>{escape(label)}</title>{escape(short)}</text>')
        for i, name in enumerate(names):
            value = series[name][g]
            y = y0 + i * BAR_H
            finite = math.isfinite(value)
            w = max(value, 0.0) / top * span if finite else 0.0
            text = f"{value:,.{decimals}f}{unit}" if finite else "n/a"
            parts.append(f'<rect x="{LABEL_W}" y="{y:.1f}" width="{w:.1f}" height="{BAR_H - 2}" '
                         f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(name)}: {escape(text)}</title></rect>'
                         f'<text x="{LABEL_W + w + 4:.1f}" y="{y + BAR_H - 4:.1f}" class="bar-value">'
                         f'{escape(text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
