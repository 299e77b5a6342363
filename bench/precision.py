"""Precision on healthy fleets: false incidents per 1,000 GPU-days on the healthy library (a 64-node week and a
day of each class of messy-but-healthy behaviour at its worst, `simulator/scenarios/healthy/`), on a real
production serving day replayed from GenTD26 (`simulator/scenarios/replay/gentd26.yaml`, skipped when the
data is absent), and on the six worst days again scraped every 60 s instead of 15 s (a detector's durations
are data time, so a coarser scrape must not page more), each against the threshold-alert baseline's pages on
the same frames of the same run. Detection and the production incident service only (no agent): the pages a
user would get. The whole loop with actions on the healthy days is in `gpuops eval --scenario
simulator/scenarios/healthy`. Writes bench/results/precision.json."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from evaluation.detection import evaluate_detection
from simulator.scenario import ScenarioError
from simulator.scenario_files import load_scenario

ROOT = Path(__file__).resolve().parent.parent / "simulator" / "scenarios"
LIBRARIES = {"healthy": sorted((ROOT / "healthy").glob("*.yaml")), "gentd26": [ROOT / "replay" / "gentd26.yaml"],
             "healthy_days_60s": sorted(p for p in (ROOT / "healthy").glob("*.yaml") if p.stem != "week")}
STEPS = {"healthy_days_60s": 60.0}  # a library scraped at another interval than its files say


def _one(path: Path, step_s: float | None = None) -> dict[str, Any] | None:
    try:
        scenario = load_scenario(path)
        if step_s is not None:
            scenario = scenario.model_copy(update={"step": step_s})
    except ScenarioError as exc:
        if "gentd26" in path.name and "No such file" in str(exc):
            print(f"skipped {path.name}: the GenTD26 recording is not here ({str(exc).splitlines()[-1]})")
            return None
        raise
    began = time.perf_counter()
    result = evaluate_detection(scenario)
    at = "" if step_s is None else f" at a {step_s:g} s scrape"
    print(f"{scenario.name}{at}: {result['false_incidents']} false incidents over {result['gpu_days']} GPU-days "
          f"(threshold alerts: {result['threshold_false_pages']} pages), {time.perf_counter() - began:.0f}s",
          flush=True)
    keep = ("scenario", "gpu_days", "findings", "incidents", "false_incidents", "false_incidents_per_1000_gpu_days",
            "false_by_detector", "threshold_false_pages")
    return {**{k: result[k] for k in keep}, "step_s": scenario.step, "seconds": round(time.perf_counter() - began, 1)}


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    days = sum(r["gpu_days"] for r in rows)
    false, pages = sum(r["false_incidents"] for r in rows), sum(r["threshold_false_pages"] for r in rows)
    return {"gpu_days": round(days, 1), "false_incidents": false, "threshold_false_pages": pages,
            "false_incidents_per_1000_gpu_days": round(1000 * false / days, 2) if days else None,
            "threshold_pages_per_1000_gpu_days": round(1000 * pages / days, 2) if days else None}


def run(results_dir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"command": "python -m bench precision"}
    for name, paths in LIBRARIES.items():
        rows = [row for path in paths if (row := _one(path, STEPS.get(name))) is not None]
        figures[name] = {"scenarios": rows, "total": _total(rows)} if rows else {"skipped": True}
    (results_dir / "precision.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return {name: value.get("total", value) for name, value in figures.items() if isinstance(value, dict)}
