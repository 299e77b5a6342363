"""The hindsight keep-alive frontier: per-model choices that add up, and a frontier no uniform keep-alive beats."""

from __future__ import annotations

import numpy as np

from evaluation.autoscale.baselines import Reactive
from evaluation.autoscale.bounds import hours_for, keep_alive_frontier, share_within
from evaluation.autoscale.replay import ColdStarts, ReplicaSimulator
from tests.unit.autoscale_traces import trace

# Model 0 is called every 1,000 s, model 1 every 20,000 s; each request holds a GPU 40 s (so a cycle sees it in
# flight); a cold start is 20 s.
ROWS = sorted([(1000.0 * k, 40, 0) for k in range(40)] + [(20000.0 * k + 500, 40, 1) for k in range(2)])


def simulator() -> ReplicaSimulator:
    return ReplicaSimulator(trace(ROWS, n_models=2), ColdStarts(np.array([20.0]), 2, seed=0))


def test_gpu_time_is_kept_per_model_and_adds_up() -> None:
    result = simulator().run(Reactive(2))
    assert result.gpu_seconds_by_model is not None
    assert result.gpu_seconds_by_model.sum() == result.gpu_seconds
    # model 1: two lone requests, each a cold start, its service and reactive's 300 s hold, stopped on a cycle
    assert 2 * 330 <= result.gpu_seconds_by_model[1] <= 2 * 400


def test_the_frontier_keeps_the_frequent_model_warm_and_lets_the_rare_one_go_cold() -> None:
    sim = simulator()
    frontier = keep_alive_frontier(sim, grid_s=(0.0, 300.0, 1800.0, 86400.0))
    hours = [p.gpu_hours for p in frontier]
    shares = [p.share_wait_over for p in frontier]
    assert hours == sorted(hours) and shares == sorted(shares, reverse=True)
    # model 0 held across its 1,000 s gaps waits only on its first request; model 1 waits twice either way unless
    # held for a day; the frontier has that point, cheaper than holding both models for 1,800 s
    mixed = [p for p in frontier if round(p.share_wait_over * len(ROWS)) == 3]
    assert mixed
    uniform = sim.run(Reactive(2, cooldown_s=1800.0))
    assert int((uniform.wait > 5).sum()) == 3
    assert mixed[0].gpu_hours < uniform.gpu_seconds / 3600
    assert share_within(frontier, mixed[0].gpu_hours) == mixed[0].share_wait_over
    assert hours_for(frontier, mixed[0].share_wait_over) == mixed[0].gpu_hours
    assert share_within(frontier, 0.0) is None
    assert hours_for(frontier, -1.0) is None
