"""Benchmarks of the detectors: one fleet-wide detection cycle, and the NAB subset next to PyOD.

Run with `python -m bench` (all areas) or `python -m bench.detectors`. Timings are medians of repeated
runs, on one core (OpenMP/BLAS pools capped at one thread), each against a baseline measured in the
same run. The NAB corpus is read from GPUOPS_NAB_DIR, else ../shared/data/nab beside the repository.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from detectors import metrics as m
from detectors.frame import FleetFrame, FloatArray, GpuLabels
from detectors.multivariate import MultivariateModel
from detectors.nab_scorer import ScoredFile, score_all_profiles
from detectors.pipeline import DetectionCycle, default_stages
from detectors.univariate import DETECTORS
from evaluation import nab_io

REPO = Path(__file__).resolve().parents[1]
METRICS_20: tuple[str, ...] = (
    m.GPU_TEMP, m.MEMORY_TEMP, m.POWER_USAGE, m.SM_CLOCK, m.GPU_UTIL, m.MEM_COPY_UTIL, m.FB_USED, m.FB_FREE,
    m.GR_ENGINE_ACTIVE, m.SM_ACTIVE, m.XID_ERRORS, m.ECC_SBE_VOL_TOTAL, m.ECC_DBE_VOL_TOTAL,
    m.UNCORRECTABLE_REMAPPED_ROWS, m.CORRECTABLE_REMAPPED_ROWS, m.ROW_REMAP_FAILURE,
    m.NVLINK_CRC_FLIT_ERRORS, m.PCIE_REPLAY_COUNTER, m.POWER_VIOLATION, m.THERMAL_VIOLATION,
)


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fleet(n_gpus: int, steps: int, step_s: float = 30.0, seed: int = 0) -> tuple[
        FloatArray, GpuLabels, dict[str, FloatArray]]:
    """A busy fleet of `n_gpus` (8 per node, 8 nodes per job) with all 20 metrics."""
    rng = np.random.default_rng(seed)
    node = np.arange(n_gpus) // 8
    labels = GpuLabels(
        hostname=tuple(f"gpu-node-{k + 1:04d}" for k in node),
        gpu=tuple(int(g) for g in np.arange(n_gpus) % 8),
        uuid=tuple(f"GPU-{i:08x}" for i in range(n_gpus)), model_name=("NVIDIA H100 80GB HBM3",) * n_gpus,
        pod=tuple(f"train-{k // 8}-worker-{k % 8}" for k in node), namespace=("ml",) * n_gpus)
    shape = (n_gpus, steps)
    util = np.clip(95 + rng.normal(0, 2, shape), 0, 100)
    counters = {m.ECC_SBE_VOL_TOTAL: 0.05, m.NVLINK_CRC_FLIT_ERRORS: 0.2, m.PCIE_REPLAY_COUNTER: 0.1}
    metrics: dict[str, FloatArray] = {}
    for name in METRICS_20:
        if name in counters:
            metrics[name] = np.cumsum(rng.poisson(counters[name], shape), axis=1).astype(np.float64)
        else:
            metrics[name] = np.zeros(shape)
    metrics[m.GPU_TEMP] = 65 + rng.normal(0, 1, shape)
    metrics[m.MEMORY_TEMP] = 70 + rng.normal(0, 1, shape)
    metrics[m.POWER_USAGE] = 600 + rng.normal(0, 10, shape)
    metrics[m.SM_CLOCK] = 1980 + rng.normal(0, 5, shape)
    metrics[m.GPU_UTIL] = util
    metrics[m.MEM_COPY_UTIL] = 40 + rng.normal(0, 3, shape)
    metrics[m.GR_ENGINE_ACTIVE] = util / 100
    metrics[m.SM_ACTIVE] = util / 110
    metrics[m.FB_USED] = 60_000 + rng.normal(0, 50, shape)
    metrics[m.FB_FREE] = 21_000 - (metrics[m.FB_USED] - 60_000)
    ts = 1_700_000_000.0 + step_s * np.arange(steps, dtype=np.float64)
    return ts, labels, metrics


def _window(ts: FloatArray, labels: GpuLabels, metrics: dict[str, FloatArray], end: int,
            width: int) -> FleetFrame:
    lo = max(0, end - width)
    return FleetFrame(timestamps=ts[lo:end], gpus=labels,
                      metrics={k: v[:, lo:end] for k, v in metrics.items()})


def bench_cycle(n_gpus: int = 8000, warm_steps: int = 150, timed: int = 15, window: int = 10,
                multivariate: str = "robust_covariance") -> dict[str, Any]:
    """Median time of one cycle (one new sample, a `window`-sample frame) after `warm_steps` of history."""
    ts, labels, metrics = fleet(n_gpus, warm_steps + timed)
    stages = default_stages()
    if multivariate != "robust_covariance":
        stages = [s if not isinstance(s, MultivariateModel) else MultivariateModel(method="isolation_forest")
                  for s in stages]
    cycle = DetectionCycle(stages=stages)
    for end in range(1, warm_steps + 1):
        cycle.update(_window(ts, labels, metrics, end, window))
    frames = [_window(ts, labels, metrics, end, window)
              for end in range(warm_steps + 1, warm_steps + timed + 1)]
    times, found = [], 0
    for f in frames:
        t0 = time.perf_counter()
        found += len(cycle.update(f))
        times.append(time.perf_counter() - t0)
    # the floor: one plain numpy pass (a per-GPU sum) over every array of the same frame
    floor = _median_s(lambda: [a.sum(axis=1) for a in frames[-1].metrics.values()], 15)
    cycle_s = statistics.median(times)
    state = cycle.state_bytes()
    return {
        "gpus": n_gpus, "metrics": len(metrics), "frame_samples": window, "new_samples_per_cycle": 1,
        "multivariate": multivariate, "cycle_ms_median": round(cycle_s * 1e3, 2),
        "cycle_ms_max": round(max(times) * 1e3, 2), "goal_ms": 100.0,
        "numpy_floor_ms": round(floor * 1e3, 3), "ratio_to_floor": round(cycle_s / floor, 1),
        "findings_on_healthy_fleet": found, "state_bytes": len(state),
    }


def _pyod_scores(model_name: str, values: FloatArray, lag: int = 5) -> FloatArray:
    """A PyOD model fitted on the unscored probation rows (lag vectors), every row scored.

    The score is the row's outlier score relative to the largest training score, r, squashed into
    [0, 1) as r / (1 + r) (monotone, so one threshold means "r times the training maximum" everywhere).
    """
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN

    x = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.full(lag - 1, values[0]), values]), lag)
    x = x - x[:, -1:]  # shape of the recent window relative to the current value ...
    x = np.column_stack([x[:, :-1], values])  # ... plus the value itself
    n_fit = int(min(np.floor(0.15 * values.size), 750))
    model = IForest(random_state=0) if model_name == "pyod_iforest" else KNN()
    model.fit(x[:n_fit])
    train = np.asarray(model.decision_scores_, dtype=np.float64)
    shift = float(train.min())
    r = np.maximum(np.asarray(model.decision_function(x), dtype=np.float64) - shift, 0.0) / max(
        float(train.max()) - shift, 1e-12)
    return np.asarray(r / (1.0 + r), dtype=np.float64)


def bench_nab(nab_dir: Path, repeat: int = 3) -> dict[str, Any]:
    names = nab_io.list_files(nab_dir / "data")
    windows = nab_io.read_windows(nab_dir / "labels" / "combined_windows.json")
    series = {n: nab_io.read_series(nab_dir / "data", n) for n in names}
    rows = sum(s.values.size for s in series.values())
    runners: dict[str, Callable[[FloatArray], FloatArray]] = {
        "gpuops": DETECTORS["gpuops"](), "zscore": DETECTORS["zscore"](),
        "pyod_iforest": lambda v: _pyod_scores("pyod_iforest", v),
        "pyod_knn": lambda v: _pyod_scores("pyod_knn", v),
    }
    out: dict[str, Any] = {"files": len(names), "rows": rows, "detectors": {}}
    for label, fn in runners.items():
        scores: dict[str, FloatArray] = {}

        def run_all(fn: Callable[[FloatArray], FloatArray] = fn,
                    scores: dict[str, FloatArray] = scores) -> None:
            for n in names:
                scores[n] = np.asarray(fn(series[n].values), dtype=np.float64)

        seconds = _median_s(run_all, repeat if label in ("gpuops", "zscore") else 1)
        files = [ScoredFile(n, scores[n], nab_io.window_rows(series[n], windows[n])) for n in names]
        result = score_all_profiles(files)
        out["detectors"][label] = {
            "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
            **{p: round(r.score, 2) for p, r in result.items()},
        }
    base = out["detectors"]["pyod_iforest"]["rows_per_s"]
    for entry in out["detectors"].values():
        entry["speed_vs_pyod_iforest"] = round(entry["rows_per_s"] / base, 2)
    return out


def run(results_dir: Path) -> dict[str, Any]:
    nab_dir = Path(os.environ.get("GPUOPS_NAB_DIR", REPO.parent / "shared" / "data" / "nab"))
    with threadpool_limits(1):
        result = {
            "cycle": bench_cycle(),
            "cycle_isolation_forest": bench_cycle(multivariate="isolation_forest", timed=7),
            "nab": bench_nab(nab_dir),
            "cores": 1,
        }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "detectors.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    out = run(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench" / "results")
    print(json.dumps(out, indent=2, sort_keys=True))
