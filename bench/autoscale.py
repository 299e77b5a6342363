"""Benchmark of the autoscaling planner: one scaling cycle for a fleet of 1,000 deployments (the planner warmed
with a day of cycles, bursts and cold starts), and the whole `gpuops autoscale eval` replay of GenTD26's request
trace, with the hindsight keep-alive bound, when it is present (GPUOPS_GENTD26_DIR, else ../shared/data/gentd26
beside the repository).

Run with `python -m bench autoscale` or `python -m bench.autoscale`; one core (BLAS pools capped at one thread).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from evaluation.autoscale.run import EvaluationInputs, evaluate
from gpuops.autoscale.observation import CycleObservation
from gpuops.autoscale.planner import DemandPlanner

REPO = Path(__file__).resolve().parents[1]
PERIOD_S = 15.0


def bench_fleet_cycle(deployments: int = 1000, warm_cycles: int = 5760, timed: int = 200,
                      seed: int = 0) -> dict[str, Any]:
    """Median and p99 seconds of one `decide` for the whole fleet, after a day of cycles."""
    rng = np.random.default_rng(seed)
    planner = DemandPlanner(deployments)
    rates = rng.gamma(0.5, 0.01, deployments)  # arrivals per cycle, heavy-tailed across deployments
    in_flight = np.zeros(deployments, dtype=np.int64)

    def observation(k: int) -> CycleObservation:
        nonlocal in_flight
        arrivals = rng.poisson(rates * (1 + np.sin(2 * np.pi * k * PERIOD_S / 86400))).astype(np.int64)
        in_flight = np.maximum(0, in_flight + arrivals - rng.binomial(in_flight, 0.5)).astype(np.int64)
        started = np.flatnonzero(arrivals)[:20]
        cold = tuple((int(d), float(rng.uniform(3, 60))) for d in started)
        return CycleObservation(k * PERIOD_S, arrivals, in_flight, in_flight.copy(), cold)

    for k in range(warm_cycles):
        planner.decide(observation(k))
    times = []
    for k in range(warm_cycles, warm_cycles + timed):
        o = observation(k)
        t0 = time.perf_counter()
        planner.decide(o)
        times.append(time.perf_counter() - t0)
    return {"deployments": deployments, "warm_cycles": warm_cycles, "timed_cycles": timed,
            "cycle_median_s": round(statistics.median(times), 6),
            "cycle_p99_s": round(float(np.percentile(times, 99)), 6)}


def bench_replay(data_dir: Path) -> dict[str, Any]:
    requests, cold = data_dir / "requests.csv.gz", data_dir / "basemodel_update_latency.csv.gz"
    if not (requests.exists() and cold.exists()):
        return {"skipped": f"no GenTD26 trace in {data_dir}"}
    t0 = time.perf_counter()
    report = evaluate(EvaluationInputs(requests, cold, keep_alive_bound=True))
    bound = {k: v for k, v in report["keep_alive_hindsight"].items() if k != "frontier"}
    return {"requests": report["requests"], "seconds": round(time.perf_counter() - t0, 2),
            "policy_seconds": report["policy_seconds"], "policies": report["policies"],
            "targets": report["targets"], "keep_alive_hindsight": bound}


def run(results_dir: Path) -> dict[str, Any]:
    data_dir = Path(os.environ.get("GPUOPS_GENTD26_DIR", REPO.parent / "shared" / "data" / "gentd26"))
    with threadpool_limits(1):
        result = {"fleet_cycle": bench_fleet_cycle(), "gentd26_replay": bench_replay(data_dir), "cores": 1}
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "autoscale.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    out = run(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench" / "results")
    print(json.dumps(out, indent=2, sort_keys=True))
