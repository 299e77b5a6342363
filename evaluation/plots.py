"""The evaluation's PNG plots: a timeline per fault, each zoomed to its own events, and GPU-hours lost per scenario
under gpuops and the two baselines, as bars with their values on linear axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

BASELINES = ("gpuops", "no_automation", "threshold_alerts")
COLOURS = {"gpuops": "tab:green", "no_automation": "tab:grey", "threshold_alerts": "tab:orange"}
# (key in the fault's _timeline, marker, colour, legend label)
MARKS = (("onset", "|", "black", "fault starts"), ("detected", "o", "tab:blue", "detected"),
         ("incident", "v", "tab:cyan", "incident opened"), ("actions", "P", "tab:olive", "action executed"),
         ("mitigated", "s", "tab:green", "gpuops mitigated"), ("resolved", "*", "tab:green", "incident resolved"),
         ("handed", "^", "tab:purple", "handed to a human"), ("failure", "x", "tab:red", "failure (untouched run)"),
         ("threshold", "D", "tab:orange", "threshold alert + 30 min"))
MIN_SPAN_MIN = 10.0   # a panel shows at least this many minutes
DWARFS = 8.0          # a scenario this many times above the median of the others gets a panel of its own


def _events(t: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(key, seconds after onset, label) of every event of a fault's timeline that happened."""
    out = []
    for key, _, _, _ in MARKS:
        value = t.get(key)
        if key == "actions":
            out += [("actions", float(at) - t["onset"], str(runbook)) for at, runbook in value or []]
        elif value is not None:
            out.append((key, float(value) - t["onset"], ""))
    return out


def timeline_figure(report: dict[str, Any]) -> Figure | None:
    """One panel per fault, its x axis (minutes after the fault's onset) zoomed to that fault's events; what happens
    after the panel's right edge is noted in the panel, not drawn on a scale that would crush the events."""
    faults = report["faults"]
    if not faults:
        return None
    fig, axes = plt.subplots(len(faults), 1, figsize=(9, 1.25 * len(faults) + 1.2), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, fault in zip(axes[:, 0], faults, strict=True):
        t = fault["_timeline"]
        events = _events(t)
        minutes = [s / 60 for _, s, _ in events]
        lo, hi = min([*minutes, 0.0]), max([*minutes, 0.0])
        pad = max((hi - lo) * 0.08, 1.0)
        if hi - lo + 2 * pad < MIN_SPAN_MIN:
            pad = (MIN_SPAN_MIN - (hi - lo)) / 2
        right = hi + pad
        end_min = (t["end"] - t["onset"]) / 60
        ax.hlines(0, 0, min(end_min, right), color="lightgrey", linewidth=6, zorder=1)
        for key, marker, colour, label in MARKS:
            xs = [s / 60 for k, s, _ in events if k == key]
            if xs:
                handles[label] = ax.plot(xs, [0] * len(xs), marker=marker, color=colour, linestyle="none",
                                         markersize=9, zorder=3, label=label)[0]
        for at, names in _action_labels(events, close_min=(right - lo + pad) * 0.04):
            ax.annotate(names, (at, 0), xytext=(0, 9), textcoords="offset points", fontsize=7, ha="left",
                        va="bottom")
        if end_min > right:
            ax.text(0.995, 0.12, f"scenario ends at +{end_min / 60:.1f} h", transform=ax.transAxes, ha="right",
                    fontsize=7, color="dimgrey")
        ax.set_xlim(lo - pad, right)
        ax.set_ylim(-1, 1.4)
        ax.set_yticks([])
        where = fault["node"] + ("" if fault["gpu"] is None else f"/{fault['gpu']}")
        ax.set_title(f"{fault['kind']} on {where}", fontsize=9, loc="left")
        ax.set_xlabel("minutes after the fault's onset", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"{report['scenario']}: fault timelines", fontsize=11)
    ordered = [label for _, _, _, label in MARKS if label in handles]
    fig.legend([handles[label] for label in ordered], ordered, loc="lower center", ncol=min(len(ordered), 5),
               fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    rows = -(-len(ordered) // 5)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, (0.2 * rows + 0.15) / height, 1, 1 - 0.3 / height))
    return fig


def _action_labels(events: list[tuple[str, float, str]], close_min: float) -> list[tuple[float, str]]:
    """Where to write the runbooks executed (minutes), actions closer than `close_min` to the previous one sharing
    one label, so labels of a cordon, drain and reboot in quick succession do not overprint."""
    groups: list[tuple[float, float, list[str]]] = []
    for _, s, runbook in sorted((e for e in events if e[0] == "actions"), key=lambda e: e[1]):
        at = s / 60
        if groups and at - groups[-1][1] < close_min:
            groups[-1] = (groups[-1][0], at, [*groups[-1][2], runbook])
        else:
            groups.append((at, at, [runbook]))
    return [(first, ", ".join(names)) for first, _, names in groups]


def timeline(report: dict[str, Any], path: Path) -> Path | None:
    """The scenario's fault timelines as a PNG (none without faults)."""
    fig = timeline_figure(report)
    if fig is None:
        return None
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _panels(reports: list[dict[str, Any]]) -> list[list[tuple[str, dict[str, float]]]]:
    """Scenarios grouped into panels of comparable size: the ordinary ones, those that dwarf them, and the total."""
    rows = [(r["scenario"], {b: float(r["summary"]["gpu_hours_lost"][b]) for b in BASELINES}) for r in reports]
    peaks = sorted(max(v.values()) for _, v in rows)
    median = peaks[len(peaks) // 2] if peaks else 0.0
    big = [(n, v) for n, v in rows if len(rows) > 2 and median > 0 and max(v.values()) > DWARFS * median]
    small = [(n, v) for n, v in rows if (n, v) not in big]
    total = {b: sum(v[b] for _, v in rows) for b in BASELINES}
    return [p for p in (small, big) if p] + [[("all scenarios", total)]]


def gpu_hours_figure(reports: list[dict[str, Any]]) -> Figure:
    """Grouped bars of GPU-hours lost per scenario under gpuops and the baselines, each bar labelled with its value,
    on linear axes; a scenario that dwarfs the others and the total get panels (and scales) of their own."""
    panels = _panels(reports)
    widths = [max(len(p), 1) + 0.6 for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7.0, 1.3 * sum(widths) + 1.5), 5.0), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    width = 0.27
    for ax, panel in zip(axes[0], panels, strict=True):
        for i, b in enumerate(BASELINES):
            bars = ax.bar([x + (i - 1) * width for x in range(len(panel))], [v[b] for _, v in panel], width,
                          color=COLOURS[b], label=b.replace("_", " "))
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        ax.set_xticks(range(len(panel)))
        ax.set_xticklabels([n for n, _ in panel], rotation=30, ha="right", fontsize=8)
        ax.set_yscale("linear")
        ax.set_ylim(0, max([*(max(v.values()) for _, v in panel), 1.0]) * 1.15)  # room for the labels
        ax.margins(x=0.08)
        ax.tick_params(axis="y", labelsize=8)
    axes[0][0].set_ylabel("GPU-hours lost")
    fig.suptitle("GPU-hours lost: gpuops against the baselines", fontsize=11)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(BASELINES), frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 0.94))
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    return fig


def gpu_hours(reports: list[dict[str, Any]], path: Path) -> Path:
    """GPU-hours lost per scenario and in all, as a PNG."""
    fig = gpu_hours_figure(reports)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
