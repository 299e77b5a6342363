"""What keeping replicas warm can buy on a trace at best: each model's keep-alive chosen with hindsight.

A keep-alive policy holds, for each model, the most requests it had in flight over its last `K` seconds (the
reactive baseline with a cooldown of `K`). Each model's `K` is picked from a grid after seeing the whole trace:
for every GPU-hour budget, the choice across models that leaves the fewest requests waiting over the threshold.
Models share nothing in the replica simulator (each has its own replicas, queue and cold-start draws), so the
per-model figures add up exactly.

No causal keep-alive can do better than this frontier; a scaler that beats it must start replicas ahead of
arrivals it foresaw. The evaluation reports it so that a target can be checked for whether any keep-alive meets
it at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.autoscale.baselines import Reactive
from evaluation.autoscale.replay import ReplicaSimulator
from simulator.request_trace import FloatArray

KEEP_ALIVE_GRID_S = (0.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
                     86400.0, 604800.0)
HOURS_STEP = 0.25
CURVE_STEP = 0.005


@dataclass(frozen=True)
class FrontierPoint:
    gpu_hours: float
    share_wait_over: float


def keep_alive_frontier(simulator: ReplicaSimulator, threshold_s: float = 5.0,
                        grid_s: tuple[float, ...] = KEEP_ALIVE_GRID_S) -> list[FrontierPoint]:
    """The hindsight keep-alive frontier, cheapest point first, each point not dominated by another."""
    n, requests = simulator.n, len(simulator.trace)
    model = simulator.trace.model
    gpu = np.zeros((len(grid_s), n))
    waits = np.zeros((len(grid_s), n))
    for k, keep in enumerate(grid_s):
        result = simulator.run(Reactive(n, period_s=simulator.period, cooldown_s=keep, name=f"keep-{keep:.0f}"))
        assert result.gpu_seconds_by_model is not None
        gpu[k] = result.gpu_seconds_by_model
        waits[k] = np.bincount(model[result.wait > threshold_s], minlength=n)
    return _fewest_waits(gpu / 3600.0, waits, requests)


def _fewest_waits(hours: FloatArray, waits: FloatArray, requests: int) -> list[FrontierPoint]:
    """The exact frontier of one option per model (a multiple-choice knapsack): by dynamic programming over
    GPU-hours in steps of `HOURS_STEP`, each model's hours rounded up to a step, so a point's GPU-hours are never
    understated."""
    steps = np.ceil(hours / HOURS_STEP - 1e-9).astype(np.int64)
    size = int(steps.max(axis=0).sum()) + 1
    best = np.full(size, np.inf)
    best[0] = 0.0
    for m in range(hours.shape[1]):
        nxt = np.full(size, np.inf)
        for option in range(hours.shape[0]):
            shift = int(steps[option, m])
            nxt[shift:] = np.minimum(nxt[shift:], best[:size - shift] + waits[option, m])
        best = nxt
    frontier: list[FrontierPoint] = []
    for budget in np.flatnonzero(np.isfinite(best)):
        share = float(best[budget] / requests)
        if not frontier or share < frontier[-1].share_wait_over:
            frontier.append(FrontierPoint(float(budget * HOURS_STEP), share))
    return frontier


def share_within(frontier: list[FrontierPoint], gpu_hours: float) -> float | None:
    """The fewest waits the frontier reaches with no more than `gpu_hours` (None if even its cheapest needs more)."""
    within: list[float] = [p.share_wait_over for p in frontier if p.gpu_hours <= gpu_hours]
    return min(within) if within else None


def hours_for(frontier: list[FrontierPoint], share: float) -> float | None:
    """The fewest GPU-hours with which the frontier keeps waits at or under `share` (None if it never does)."""
    enough: list[float] = [p.gpu_hours for p in frontier if p.share_wait_over <= share]
    return min(enough) if enough else None


def summary(frontier: list[FrontierPoint], reactive_gpu_hours: float, share: float) -> dict[str, object]:
    """The bound at the issue's two questions: waits at reactive's GPU-hours, GPU-hours at the wait target."""
    at_reactive = share_within(frontier, reactive_gpu_hours)
    needed = hours_for(frontier, share)
    kept = [frontier[0]]
    for p in frontier[1:]:  # a point wherever the share has dropped by another half point, and the last
        if kept[-1].share_wait_over - p.share_wait_over >= CURVE_STEP or p is frontier[-1]:
            kept.append(p)
    curve: FloatArray = np.asarray([[p.gpu_hours, p.share_wait_over] for p in kept])
    return {
        "share_wait_over_5s_at_reactive_gpu_hours": None if at_reactive is None else round(at_reactive, 4),
        "gpu_hours_for_target_share": None if needed is None else round(needed, 1),
        "target_share": share,
        "frontier": [[round(float(h), 1), round(float(w), 4)] for h, w in curve],
    }
