"""One evaluation run: the trace replayed under gpuops' scaler, reactive and warm-1, plus the oracle bound, all
with the same cold-start draws; the report carries the issue's targets against the baselines of that run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from evaluation.autoscale import bounds
from evaluation.autoscale.baselines import Reactive, warm_one
from evaluation.autoscale.replay import ColdStarts, ReplayResult, ReplicaSimulator, oracle
from gpuops.autoscale.planner import DemandPlanner, PlannerSettings
from simulator.request_trace import RequestTrace, read_cold_starts, read_requests

Part = Literal["whole", "first-half", "second-half"]
PARTS: tuple[Part, ...] = ("whole", "first-half", "second-half")
WAIT_THRESHOLD_S = 5.0
TARGET_SHARE = 0.05


@dataclass(frozen=True)
class EvaluationInputs:
    requests: Path
    cold_starts: Path
    seed: int = 0
    period_s: float = 15.0
    part: Part = "whole"
    keep_alive_bound: bool = False


def select(trace: RequestTrace, part: Part) -> RequestTrace:
    """The whole trace or one half of its time span (the first half to design on, the second held out)."""
    if part == "whole":
        return trace
    cut = float(trace.arrival[0] + (trace.arrival[-1] - trace.arrival[0]) / 2)
    keep = trace.arrival < cut if part == "first-half" else trace.arrival >= cut
    return RequestTrace(trace.arrival[keep], trace.service[keep], trace.model[keep], trace.models, 0)


def evaluate(inputs: EvaluationInputs, settings: PlannerSettings | None = None) -> dict[str, Any]:
    """Read both files (all or nothing), replay every policy, and report."""
    started = time.perf_counter()
    full = read_requests(inputs.requests)
    observed = read_cold_starts(inputs.cold_starts)
    trace = select(full, inputs.part)
    n = len(trace.models)
    cold = ColdStarts(observed, n, inputs.seed)
    simulator = ReplicaSimulator(trace, cold, period=inputs.period_s)
    planner = settings or PlannerSettings(period_s=inputs.period_s)
    results: list[ReplayResult] = []
    timings: dict[str, float] = {}
    for policy in (DemandPlanner(n, planner),
                   Reactive(n, period_s=inputs.period_s), warm_one(n, period_s=inputs.period_s)):
        t0 = time.perf_counter()
        results.append(simulator.run(policy))
        timings[results[-1].policy] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    results.append(oracle(trace, cold))
    timings["oracle"] = round(time.perf_counter() - t0, 2)
    summaries = {r.policy: r.summary(WAIT_THRESHOLD_S) for r in results}
    extra: dict[str, Any] = {}
    if inputs.keep_alive_bound:
        t0 = time.perf_counter()
        frontier = bounds.keep_alive_frontier(simulator, WAIT_THRESHOLD_S)
        extra["keep_alive_hindsight"] = bounds.summary(frontier, float(summaries["reactive"]["gpu_hours"]),
                                                       TARGET_SHARE)
        timings["keep_alive_hindsight"] = round(time.perf_counter() - t0, 2)
    return {
        "requests_file": str(inputs.requests),
        "cold_starts_file": str(inputs.cold_starts),
        "part": inputs.part,
        "requests": len(trace),
        "skipped_without_base_model": full.skipped,
        "models": int(np.unique(trace.model).size),
        "hours": round(float(trace.arrival[-1] - trace.arrival[0]) / 3600.0, 1),
        "cold_starts_observed": int(observed.size),
        "cold_start_p50_s": round(float(np.percentile(observed, 50)), 1),
        "cold_start_p90_s": round(float(np.percentile(observed, 90)), 1),
        "seed": inputs.seed,
        "period_s": inputs.period_s,
        "warm_value_s": planner.warm_value_s,
        "planner_terms": {"seasonal": planner.seasonal, "gate": planner.seasonal_gate, "hazard": planner.hazard,
                          "cross": planner.cross},
        "policies": summaries,
        "policy_seconds": timings,
        "targets": targets(summaries),
        **extra,
        "seconds": round(time.perf_counter() - started, 2),
    }


def targets(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets for gpuops, measured against the reactive and oracle figures of the same run."""
    ours, reactive, bound = summaries["gpuops"], summaries["reactive"], summaries["oracle"]
    share, hours = float(ours["share_wait_over_5s"]), float(ours["gpu_hours"])
    oracle_hours = float(bound["gpu_hours"]) or float("nan")
    return {
        "gpu_hours_vs_reactive": round(hours / float(reactive["gpu_hours"]), 3),
        "gpu_hours_vs_oracle": round(hours / oracle_hours, 3),
        "target_met": share <= TARGET_SHARE and hours <= float(reactive["gpu_hours"]),
        "moonshot_met": share <= 0.02 and hours <= 1.5 * oracle_hours,
    }
