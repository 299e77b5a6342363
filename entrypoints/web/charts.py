"""Metric charts drawn on the server as inline SVG: no script, no network, readable without a browser plug-in.
Titles in words with their unit, time ticks as HH:MM (with the date where it changes), markers labelled inside
the plot, and each moment's values on hover (an SVG <title> per time slice)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 210
PAD_L, PAD_R, PAD_T, PAD_B = 52, 12, 34, 30
PALETTE = ("#dc2626", "#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d")
TICK_STEPS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_HOVER_SLICES = 90


@dataclass(frozen=True)
class Marker:
    """A vertical line at a moment (the incident opened, an action ran)."""

    ts: float
    label: str


@dataclass(frozen=True)
class Series:
    """One line: `emphasis` draws it thick (the faulty GPU), `dashed` thin and dashed (a peer median)."""

    label: str
    values: Sequence[float]
    colour: str = ""
    emphasis: bool = False
    dashed: bool = False


def fmt(value: float, unit: str = "") -> str:
    if not math.isfinite(value):
        return "no sample"
    if value == 0:
        text = "0"
    elif abs(value) >= 1e6 or abs(value) < 1e-2:
        text = f"{value:.2e}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip() if unit and unit not in ("%", "°C") else f"{text}{unit}"


def time_ticks(t0: float, t1: float, max_ticks: int = 6) -> list[tuple[float, str]]:
    """Round times between t0 and t1, labelled HH:MM; the first tick and any tick on a new day carry the date."""
    span = max(t1 - t0, 1.0)
    step = next((s for s in TICK_STEPS_S if span / s <= max_ticks), TICK_STEPS_S[-1])
    first = math.ceil(t0 / step) * step
    ticks: list[tuple[float, str]] = []
    last_day = None
    t = first
    while t <= t1:
        moment = datetime.fromtimestamp(t, tz=UTC)
        label = moment.strftime("%H:%M")
        if moment.date() != last_day:
            label = f"{moment.day} {moment.strftime('%b')} {label}"
            last_day = moment.date()
        ticks.append((t, label))
        t += step
    return ticks


def line_chart(title: str, timestamps: Sequence[float], series: Sequence[Series], markers: Sequence[Marker] = (),
               *, unit: str = "", field_name: str = "", span: tuple[float, float] | None = None) -> Markup:
    """An SVG line chart of `series` on `timestamps` (NaN breaks a line) with `markers`; the x axis spans the
    samples (or `span`, shared by charts drawn side by side), not an assumed window."""
    points = [(t, v) for s in series for t, v in zip(timestamps, s.values, strict=False) if math.isfinite(v)]
    head = f"{title} ({unit})" if unit else title
    field_title = f"<title>{escape(field_name)}</title>" if field_name else ""
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(head)}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{PAD_L}" y="14" class="chart-title">{field_title}{escape(head)}</text>']
    if not points:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="chart-empty">'
                     'no samples in this window</text></svg>')
        return Markup("".join(parts))
    times = [t for t, _ in points]
    t0, t1 = span if span is not None else (min(times), max(times))
    t1 = max(t1, t0 + 60)
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
                     f'class="chart-axis">{escape(fmt(value))}</text>')
    for t, label in time_ticks(t0, t1):
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{HEIGHT - PAD_B}" y2="{HEIGHT - PAD_B + 4}" '
                     f'class="chart-grid"/><text x="{x(t):.1f}" y="{HEIGHT - 10}" text-anchor="middle" '
                     f'class="chart-axis">{escape(label)}</text>')
    for i, s in enumerate(series):
        colour = s.colour or PALETTE[i % len(PALETTE)]
        width = 2.4 if s.emphasis else 1.3
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        for run in _runs(timestamps, s.values):
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{width}"{dash}>'
                         f'<title>{escape(s.label)}</title></polyline>')
    parts += _marker_parts(markers, t0, t1, x)
    parts += _hover_parts(timestamps, series, unit, t0, t1, x)
    legend = " ".join(f'<tspan fill="{s.colour or PALETTE[i % len(PALETTE)]}">{"━" if not s.dashed else "╍"} '
                      f'{escape(s.label)}</tspan>' for i, s in enumerate(list(series)[:4]))
    parts.append(f'<text x="{PAD_L}" y="28" class="chart-legend">{legend}</text></svg>')
    return Markup("".join(parts))


def _marker_parts(markers: Sequence[Marker], t0: float, t1: float, x: Callable[[float], float]) -> list[str]:
    """Marker lines with their labels inside the plot: near the right edge a label reads leftwards, and labels
    that would overlap step down a line."""
    parts: list[str] = []
    taken: list[tuple[float, int]] = []
    for marker in sorted(markers, key=lambda m: m.ts):
        if not t0 <= marker.ts <= t1:
            continue
        mx = x(marker.ts)
        right = mx > WIDTH - PAD_R - 110
        level = 0
        while any(abs(mx - other) < 110 and lvl == level for other, lvl in taken):
            level += 1
        taken.append((mx, level))
        ly = PAD_T + 10 + 11 * (level % 4)
        lx, anchor = (mx - 3, "end") if right else (mx + 3, "start")
        parts.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{PAD_T}" y2="{HEIGHT - PAD_B}" class="chart-marker"/>'
                     f'<text x="{lx:.1f}" y="{ly}" text-anchor="{anchor}" class="chart-marker-label">'
                     f'{escape(marker.label)}</text>')
    return parts


def _hover_parts(timestamps: Sequence[float], series: Sequence[Series], unit: str, t0: float, t1: float,
                 x: Callable[[float], float]) -> list[str]:
    """Transparent time slices, each with a <title> listing every series' value at that moment."""
    stamps = [t for t in timestamps if t0 <= t <= t1]
    if not stamps:
        return []
    stride = max(1, math.ceil(len(stamps) / MAX_HOVER_SLICES))
    index = {t: i for i, t in enumerate(timestamps)}
    parts = []
    chosen = stamps[::stride]
    for k, t in enumerate(chosen):
        left = x(t)
        right = x(chosen[k + 1]) if k + 1 < len(chosen) else WIDTH - PAD_R
        i = index[t]
        values = "; ".join(f"{s.label}: {fmt(float(s.values[i]), unit)}" for s in series if i < len(s.values))
        when = datetime.fromtimestamp(t, tz=UTC).strftime("%d %b %H:%M:%S UTC")
        parts.append(f'<rect class="chart-hover" x="{left:.1f}" y="{PAD_T}" width="{max(right - left, 1):.1f}" '
                     f'height="{HEIGHT - PAD_T - PAD_B}"><title>{escape(when)}: {escape(values)}</title></rect>')
    return parts


def event_strip(title: str, t0: float, t1: float, events: Sequence[tuple[float, str]],
                markers: Sequence[Marker] = ()) -> Markup:
    """Events (an XID code at a moment) as ticks on a time line, each labelled and with its time on hover."""
    height = 90
    t1 = max(t1, t0 + 60)

    def x(t: float) -> float:
        return PAD_L + (t - t0) / (t1 - t0) * (WIDTH - PAD_L - PAD_R)

    parts = [f'<svg class="chart chart-events" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{PAD_L}" y="14" class="chart-title">{escape(title)}</text>',
             f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="50" y2="50" class="chart-grid"/>']
    for t, label in time_ticks(t0, t1):
        parts.append(f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="middle" class="chart-axis">'
                     f'{escape(label)}</text>')
    for marker in markers:
        if t0 <= marker.ts <= t1:
            parts.append(f'<line x1="{x(marker.ts):.1f}" x2="{x(marker.ts):.1f}" y1="24" y2="62" '
                         f'class="chart-marker"/>')
    if not events:
        parts.append(f'<text x="{WIDTH / 2}" y="42" text-anchor="middle" class="chart-empty">no XID reported and '
                     'no GPU went silent in this window</text>')
    last_x = -1e9
    for t, label in events:
        ex = x(t)
        when = datetime.fromtimestamp(t, tz=UTC).strftime("%d %b %H:%M:%S UTC")
        parts.append(f'<g class="chart-event"><title>{escape(label)} at {escape(when)}</title>'
                     f'<circle cx="{ex:.1f}" cy="50" r="6"/>')
        if ex - last_x > 70:
            anchor = "end" if ex > WIDTH - PAD_R - 60 else "start"
            parts.append(f'<text x="{ex + (-8 if anchor == "end" else 8):.1f}" y="46" text-anchor="{anchor}" '
                         f'class="chart-event-label">{escape(label)}</text>')
            last_x = ex
        parts.append("</g>")
    parts.append("</svg>")
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
