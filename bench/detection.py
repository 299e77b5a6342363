"""Detection accuracy on the scenario library with seeds never used in development: recall, time to detect,
lead time, and false incidents per 1,000 GPU-days on the fault-free control. The twin runs in process and
every cycle's frame goes to the detectors and the real incident service."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from evaluation.detection import evaluate_detection
from simulator.scenario_files import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "simulator" / "scenarios"
HELD_OUT_SEEDS = (9101, 9102)  # never used while developing the detectors


def run(results_dir: Path) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        for seed in HELD_OUT_SEEDS:
            scenario = load_scenario(path).model_copy(update={"seed": seed})
            started = time.perf_counter()
            result = evaluate_detection(scenario)
            result["wall_s"] = round(time.perf_counter() - started, 1)
            result.pop("faults")
            runs.append(result)
    scored = [r["detection"] for r in runs if r["detection"]["faults"]]

    def pooled(key: str) -> float | None:
        values = [d[key] for d in scored if d[key] is not None]
        return round(sum(values) / len(values), 4) if values else None

    gpu_days = sum(r["gpu_days"] for r in runs)
    false = sum(r["false_incidents"] for r in runs)
    control = [r for r in runs if r["scenario"] == "control"]
    control_days = sum(r["gpu_days"] for r in control)
    figures = {
        "seeds": list(HELD_OUT_SEEDS),
        "mean_recall": pooled("recall"),
        "mean_abrupt_recall_within_two_steps": pooled("abrupt_recall_within_two_steps"),
        "mean_forecastable_flagged_15min_before": pooled("forecastable_flagged_15min_before"),
        "false_incidents": false, "gpu_days": round(gpu_days, 1),
        "false_incidents_per_1000_gpu_days_all": round(1000 * false / gpu_days, 2),
        "false_incidents_per_1000_gpu_days_fault_free": round(
            1000 * sum(r["false_incidents"] for r in control) / control_days, 2) if control_days else None,
        "runs": runs,
    }
    (results_dir / "detection.json").write_text(json.dumps(figures, indent=2))
    return {k: v for k, v in figures.items() if k != "runs"}
