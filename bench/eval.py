"""The whole loop on the whole scenario library (`gpuops eval --scenario simulator/scenarios`): recall, false
incidents, unsafe actions proposed / blocked / executed, and GPU-hours lost under gpuops against no automation
and threshold alerts. Writes bench/results/eval.json (and the report and plots under bench/results/eval/)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from evaluation.run import EvalRequest, run_eval
from gpuops.config import Settings
from gpuops.policy import PolicyConfig

SCENARIOS = Path(__file__).resolve().parent.parent / "simulator" / "scenarios"


def run(results_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    request = EvalRequest(scenario=SCENARIOS, planner="rules", out=results_dir / "eval", policy=PolicyConfig(),
                          settings=Settings(database_url="sqlite:///:memory:"))
    report = run_eval(request, progress=lambda line: print(line, flush=True))
    figures = {
        "command": "gpuops eval --scenario simulator/scenarios --out bench/results/eval",
        "policy": "defaults", "wall_s": round(time.perf_counter() - started, 1),
        "summary": report["summary"],
        "scenarios": [{"scenario": s["scenario"], "approval": s["approval"], "planner": s["planner"],
                       "seconds": s["seconds"], **s["summary"]} for s in report["scenarios"]],
        "faults": [{k: f[k] for k in ("scenario", "kind", "node", "gpu", "detected", "time_to_detect_s",
                                      "lead_time_s", "runbook_executed", "verified", "time_to_mitigate_s",
                                      "gpu_hours_lost")} for f in report["faults"]],
    }
    (results_dir / "eval.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return {"summary": figures["summary"], "wall_s": figures["wall_s"]}
