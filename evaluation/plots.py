"""The evaluation's PNG plots: a timeline per fault, and GPU-hours lost per baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt

BASELINES = ("gpuops", "no_automation", "threshold_alerts")
MARKS = (("detected", "o", "tab:blue", "detected"), ("failure", "x", "tab:red", "failure (untouched run)"),
         ("mitigated", "s", "tab:green", "gpuops mitigated"), ("handed", "^", "tab:purple", "handed to a human"),
         ("threshold", "D", "tab:orange", "threshold alert + 30 min"))


def timeline(report: dict[str, Any], path: Path) -> Path | None:
    """One row per fault of a scenario: onset to scenario end, with detection, failure and mitigations."""
    faults = report["faults"]
    if not faults:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(faults) + 1.6))
    used: set[str] = set()
    for y, fault in enumerate(faults):
        t = fault["_timeline"]
        origin = t["onset"]
        ax.hlines(y, 0, (t["end"] - origin) / 3600, color="lightgrey", linewidth=6)
        for key, marker, colour, label in MARKS:
            if t.get(key) is not None:
                ax.plot((t[key] - origin) / 3600, y, marker=marker, color=colour, linestyle="none",
                        markersize=8, label=None if label in used else label)
                used.add(label)
    ax.set_yticks(range(len(faults)))
    ax.set_yticklabels([f"{f['kind']} {f['node']}" + ("" if f["gpu"] is None else f"/{f['gpu']}") for f in faults])
    ax.set_xlabel("hours after the fault's onset")
    ax.set_title(f"{report['scenario']}: fault timelines")
    ax.invert_yaxis()
    if used:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def gpu_hours(reports: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: GPU-hours lost per scenario under gpuops and the two baselines."""
    names = [r["scenario"] for r in reports] + ["all"]
    values = {b: [r["summary"]["gpu_hours_lost"][b] for r in reports] for b in BASELINES}
    for b in BASELINES:
        values[b].append(sum(values[b]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4.5))
    width = 0.27
    for i, b in enumerate(BASELINES):
        ax.bar([x + (i - 1) * width for x in range(len(names))], values[b], width, label=b.replace("_", " "))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right")
    ax.set_yscale("symlog", linthresh=1.0)  # one long scenario would flatten the others on a linear scale
    ax.set_ylabel("GPU-hours lost (symlog)")
    ax.set_title("GPU-hours lost: gpuops against the baselines")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
