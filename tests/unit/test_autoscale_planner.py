"""gpuops' scaler: causal (a trace cut at a point gives the same decisions up to the cut), learns each
deployment's own cold start, keeps a spare while demand is likely and lets it go after a quiet spell."""

from __future__ import annotations

import numpy as np

from evaluation.autoscale.replay import ColdStarts, ReplicaSimulator
from evaluation.autoscale.trace import RequestTrace
from gpuops.autoscale.observation import CycleObservation
from gpuops.autoscale.planner import DemandPlanner, PlannerSettings
from tests.unit.autoscale_traces import T0, synthetic_rows


def synthetic_trace(days: float = 9, models: int = 4, seed: int = 3) -> RequestTrace:
    rows = synthetic_rows(days, models, seed)
    names = tuple(sorted({r[2] for r in rows}))
    return RequestTrace(np.array([T0 + r[0] for r in rows]), np.array([r[1] for r in rows]),
                        np.array([names.index(r[2]) for r in rows], dtype=np.int64), names)


def observation(now: float, arrivals: list[int], in_flight: list[int] | None = None,
                cold: tuple[tuple[int, float], ...] = ()) -> CycleObservation:
    n = len(arrivals)
    return CycleObservation(now, np.array(arrivals, dtype=np.int64),
                            np.array(in_flight or [0] * n, dtype=np.int64), np.zeros(n, dtype=np.int64), cold)


def test_decisions_up_to_a_cut_do_not_depend_on_what_comes_after_it() -> None:
    full = synthetic_trace()
    cut = float(full.arrival[0] + 0.6 * (full.arrival[-1] - full.arrival[0])) + 7.0
    cold = np.array([3.0, 20.0, 25.0, 45.0])
    whole = ReplicaSimulator(full, ColdStarts(cold, 4, 1)).run(DemandPlanner(4), record=True).decisions
    early = ReplicaSimulator(full.before(cut), ColdStarts(cold, 4, 1)).run(DemandPlanner(4), record=True).decisions
    assert whole is not None and early is not None
    first_tick = np.floor(full.arrival[0] / 15.0) * 15.0
    before_cut = int((cut - first_tick) // 15.0) + 1
    # the cut replay ends once its last request is served, which may be a little before the cut
    compared = min(before_cut, early.shape[0])
    assert before_cut - compared < 400 and early.shape[0] < whole.shape[0]
    assert np.array_equal(whole[:compared], early[:compared])
    assert whole[:compared].any()


def test_each_deployment_learns_its_own_cold_start_and_the_fleet_covers_the_rest() -> None:
    planner = DemandPlanner(3, PlannerSettings(own_cold_starts_needed=3))
    assert list(planner.cold_start_s) == [60.0] * 3
    planner.decide(observation(0, [0, 0, 0], cold=((0, 50.0), (0, 50.0), (0, 50.0), (1, 10.0))))
    assert planner.cold_start_s[0] == 50.0
    assert planner.cold_start_s[1] == planner.cold_start_s[2] == np.quantile([50, 50, 50, 10], 0.9)


def test_a_burst_brings_spares_ahead_of_demand_and_quiet_lets_them_go() -> None:
    planner = DemandPlanner(2, PlannerSettings(warm_value_s=600))
    first = planner.decide(observation(0, [6, 0], in_flight=[2, 0]))
    assert first[0] > 2 and first[1] == 0
    t, desired = 0.0, first
    while t < 6 * 3600 and desired[0] > 0:
        t += 15
        desired = planner.decide(observation(t, [0, 0]))
    assert desired[0] == 0 and t < 3 * 3600


def test_a_busy_hour_yesterday_warms_the_deployment_just_before_it_today() -> None:
    planner = DemandPlanner(1, PlannerSettings(warm_value_s=1800, recent_half_life_s=60))
    decided: dict[float, int] = {}
    t = 0.0
    while t < 86400 + 14 * 3600:
        busy = 9 * 3600 <= t < 10 * 3600  # 09:00 to 10:00 on day one only
        decided[t] = int(planner.decide(observation(t, [1 if busy and t % 300 == 0 else 0]))[0])
        t += 15
    day_two = 86400.0
    assert decided[day_two + 5 * 3600] == 0  # quiet at 05:00
    assert decided[day_two + 9 * 3600 - 30] == 1  # warm one cold start before 09:00, nothing seen since yesterday
    assert decided[day_two + 13 * 3600] == 0


def test_one_cycle_for_a_thousand_deployments_is_one_call() -> None:
    planner = DemandPlanner(1000)
    rng = np.random.default_rng(0)
    for k in range(5):
        desired = planner.decide(observation(15.0 * k, list(rng.poisson(0.2, 1000))))
    assert desired.shape == (1000,) and desired.dtype == np.int64
