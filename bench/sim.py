"""Benchmarks of the fleet twin and of the telemetry port, as ratios against baselines in the same run.

1. Twin speed at 1,000 nodes × 8 GPUs, 15 s step, pinned to one core: median wall time per step,
   as a multiple of real time (the goal is ≥ 200×), for the whole step and for the part outside
   the Kubernetes state's tick.
2. Pulling one FleetFrame of 20 metrics for 8,000 GPUs from a real Prometheus that scraped the
   twin, against the time Prometheus itself takes to answer the same 20 range queries (raw HTTP,
   body read, not parsed).

Run: `python -m bench sim` (writes bench/results/sim.json).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from connectors.telemetry import DEFAULT_GPU_METRICS, PrometheusTelemetry
from simulator.scenario import scenario_from_dict
from simulator.server import build_app
from simulator.twin import Twin

NODES, GPUS, STEP_S = 1000, 8, 15.0


def fleet_twin(start: float | None = None) -> Twin:
    data: dict[str, Any] = {
        "name": "bench",
        "seed": 1,
        "fleet": {"nodes": NODES, "gpus_per_node": GPUS},
        "duration": "24h",
        "step": f"{STEP_S:g}s",
    }
    if start is not None:
        data["start"] = start
    return Twin(scenario_from_dict(data))


def bench_twin(steps: int = 40) -> dict[str, Any]:
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        began = time.perf_counter()
        twin = fleet_twin()
        build_s = time.perf_counter() - began
        for _ in range(3):
            twin.step()
        wall, kube = [], []
        for _ in range(steps):
            k0, t0 = twin.kube_seconds, time.perf_counter()
            twin.step()
            wall.append(time.perf_counter() - t0)
            kube.append(twin.kube_seconds - k0)
        render = []
        for _ in range(3):
            t0 = time.perf_counter()
            twin.metrics_text()
            render.append(time.perf_counter() - t0)
    finally:
        os.sched_setaffinity(0, affinity)
    step_s = statistics.median(wall)
    physics_s = statistics.median(w - k for w, k in zip(wall, kube, strict=True))
    return {
        "nodes": NODES,
        "gpus": NODES * GPUS,
        "step_s": STEP_S,
        "steps_measured": steps,
        "cores": 1,
        "build_s": round(build_s, 3),
        "median_step_wall_s": round(step_s, 5),
        "realtime_factor": round(STEP_S / step_s, 1),
        "gpu_samples_per_s": round(NODES * GPUS / step_s),
        "median_step_wall_s_without_kube_tick": round(physics_s, 5),
        "realtime_factor_without_kube_tick": round(STEP_S / physics_s, 1),
        "kube_tick_share": round(statistics.median(kube) / step_s, 3),
        "median_metrics_render_s": round(statistics.median(render), 3),
        "goal_realtime_factor": 200,
    }


def bench_pull(workdir: Path, scrapes: int = 5, repeats: int = 3) -> dict[str, Any]:
    from tests.prometheus_server import running_prometheus
    from tests.sim_server import serving
    from tests.waiting import wait_for

    start = float(int(time.time()) - 600)  # Prometheus takes samples at most ~1 h older than its newest
    twin = fleet_twin(start)
    with serving(build_app(twin, with_kubernetes=False)) as url:
        target = url.removeprefix("http://")
        params = {"timestamps": ["true"]}
        with running_prometheus(
            workdir, [target], scrape_interval="15s", metrics_params=params, ready_timeout_s=60
        ) as prom:
            for _ in range(scrapes):
                twin.step()

                def scraped(t: float = twin.t) -> bool:
                    answer = httpx.get(
                        f"{prom.url}/api/v1/query",
                        timeout=30,
                        params={"query": "max(timestamp(DCGM_FI_DEV_GPU_TEMP))", "time": t},
                    ).json()
                    result = answer["data"]["result"]
                    return bool(result) and float(result[0]["value"][1]) == t

                wait_for(scraped, timeout=120.0, interval=0.5, message=f"prometheus did not scrape t={twin.t}")
            window = (start + STEP_S, twin.t, STEP_S)
            adapter = PrometheusTelemetry(prom.url, timeout_s=60)
            raw_times, frame_times = [], []
            with httpx.Client(timeout=60) as client:
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    for metric in DEFAULT_GPU_METRICS:
                        response = client.get(
                            f"{prom.url}/api/v1/query_range",
                            params={"query": metric, "start": window[0], "end": window[1], "step": STEP_S},
                        )
                        response.read()
                    raw_times.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    frame = adapter.frame(*window, metrics=DEFAULT_GPU_METRICS, node_series={})
                    frame_times.append(time.perf_counter() - t0)
    raw, pulled = statistics.median(raw_times), statistics.median(frame_times)
    return {
        "gpus": frame.n_gpus,
        "metrics": len(frame.metrics),
        "steps": frame.n_steps,
        "repeats": repeats,
        "median_prometheus_answer_s": round(raw, 3),
        "median_frame_pull_s": round(pulled, 3),
        "ratio_frame_pull_to_prometheus": round(pulled / raw, 2),
    }


def run(results_dir: Path) -> dict[str, Any]:
    results_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"twin": bench_twin()}
    with tempfile.TemporaryDirectory(prefix="gpuops-bench-prom-") as tmp:
        result["prometheus_pull"] = bench_pull(Path(tmp))
    (results_dir / "sim.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    print(json.dumps(run(Path(__file__).parent / "results"), indent=2))
