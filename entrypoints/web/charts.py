"""Metric charts drawn on the server as inline SVG: no script, no network, readable without a browser plug-in."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 200
PAD_L, PAD_R, PAD_T, PAD_B = 52, 12, 22, 26
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d")


@dataclass(frozen=True)
class Marker:
    """A vertical line at a moment (the incident opened, an action ran)."""

    ts: float
    label: str


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-2:
        return f"{value:.2e}"
    return f"{value:.4g}"


def line_chart(title: str, timestamps: Sequence[float], series: Mapping[str, Sequence[float]],
               markers: Sequence[Marker] = ()) -> Markup:
    """An SVG line chart of `series` (label → values on `timestamps`; NaN breaks a line) with `markers`."""
    points = [(t, v) for values in series.values() for t, v in zip(timestamps, values, strict=False)
              if math.isfinite(v)]
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{PAD_L}" y="14" class="chart-title">{escape(title)}</text>']
    if not points:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="chart-empty">'
                     'no samples in this window</text></svg>')
        return Markup("".join(parts))
    t0, t1 = timestamps[0], max(timestamps[-1], timestamps[0] + 1)
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1

    def x(t: float) -> float:
        return PAD_L + (t - t0) / (t1 - t0) * (WIDTH - PAD_L - PAD_R)

    def y(v: float) -> float:
        return HEIGHT - PAD_B - (v - lo) / (hi - lo) * (HEIGHT - PAD_T - PAD_B)

    for value in (lo, (lo + hi) / 2, hi):
        parts.append(f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                     f'class="chart-grid"/><text x="{PAD_L - 4}" y="{y(value) + 4:.1f}" text-anchor="end" '
                     f'class="chart-axis">{_fmt(value)}</text>')
    for t, anchor in ((t0, "start"), (t1, "end")):
        label = datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M")
        parts.append(f'<text x="{x(t):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}" class="chart-axis">'
                     f'{label}</text>')
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        for run in _runs(timestamps, values):
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5">'
                         f'<title>{escape(name)}</title></polyline>')
    for marker in markers:
        if t0 <= marker.ts <= t1:
            parts.append(f'<line x1="{x(marker.ts):.1f}" x2="{x(marker.ts):.1f}" y1="{PAD_T}" '
                         f'y2="{HEIGHT - PAD_B}" class="chart-marker"/><text x="{x(marker.ts) + 3:.1f}" '
                         f'y="{PAD_T + 10}" class="chart-marker-label">{escape(marker.label)}</text>')
    legend = " ".join(f'<tspan fill="{PALETTE[i % len(PALETTE)]}">■ {escape(name)}</tspan>'
                      for i, name in enumerate(list(series)[:8]))
    parts.append(f'<text x="{WIDTH - PAD_R}" y="14" text-anchor="end" class="chart-legend">{legend}</text></svg>')
    return Markup("".join(parts))


def _runs(timestamps: Sequence[float], values: Sequence[float]) -> list[list[tuple[float, float]]]:
    """Consecutive finite samples, so a gap in the data shows as a gap in the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in zip(timestamps, values, strict=False):
        if math.isfinite(v):
            runs[-1].append((t, v))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]
