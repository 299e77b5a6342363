"""gpuops' scaler: causal (a trace cut at a point gives the same decisions up to the cut), learns each
deployment's own cold start, keeps a spare while demand is likely and lets it go after a quiet spell."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.autoscale.replay import ColdStarts, ReplicaSimulator
from gpuops.autoscale.observation import CycleObservation
from gpuops.autoscale.planner import DemandPlanner, PlannerSettings
from simulator.request_trace import RequestTrace
from tests.unit.autoscale_traces import T0, synthetic_rows, trace


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


def test_a_busy_hour_on_past_days_warms_the_deployment_just_before_it_today() -> None:
    planner = DemandPlanner(1, PlannerSettings(warm_value_s=1800, recent_half_life_s=60))
    decided: dict[float, int] = {}
    t = 0.0
    while t < 2 * 86400 + 14 * 3600:
        busy = t < 2 * 86400 and 9 * 3600 <= t % 86400 < 10 * 3600  # 09:00 to 10:00 on days one and two only
        decided[t] = int(planner.decide(observation(t, [1 if busy and t % 300 == 0 else 0]))[0])
        t += 15
    day_three = 2 * 86400.0
    assert decided[day_three + 5 * 3600] == 0  # quiet at 05:00
    assert decided[day_three + 9 * 3600 - 30] == 1  # warm one cold start before 09:00, nothing seen since yesterday
    assert decided[day_three + 13 * 3600] == 0


def test_the_clock_forecast_waits_for_a_quiet_spell_the_deployment_has_lived_through() -> None:
    """After its first day a deployment has never been quiet for 23 hours, so it may as well be gone: the
    busy hour of day one alone does not warm it on day two (day two's call teaches that it comes back).
    Without the gate the clock alone warms it."""

    def before_nine_on_day_two(settings: PlannerSettings) -> int:
        planner = DemandPlanner(1, settings)
        t, desired = 0.0, 0
        while t <= 86400 + 9 * 3600 - 30:
            busy = 9 * 3600 <= t < 10 * 3600
            desired = int(planner.decide(observation(t, [1 if busy and t % 300 == 0 else 0]))[0])
            t += 15
        return desired

    assert before_nine_on_day_two(PlannerSettings(warm_value_s=1800, recent_half_life_s=60)) == 0
    assert before_nine_on_day_two(PlannerSettings(warm_value_s=1800, recent_half_life_s=60,
                                                  seasonal_gate=False)) == 1


def test_one_cycle_for_a_thousand_deployments_is_one_call() -> None:
    planner = DemandPlanner(1000)
    rng = np.random.default_rng(0)
    for k in range(5):
        desired = planner.decide(observation(15.0 * k, list(rng.poisson(0.2, 1000))))
    assert desired.shape == (1000,) and desired.dtype == np.int64


def served_warm(rows: list[tuple[float, float, int]], n_models: int, settings: PlannerSettings,
                cold_s: float = 30.0) -> tuple[np.ndarray, float]:
    """Waits and GPU-seconds of the planner on hand-made (seconds, service, model) rows."""
    result = ReplicaSimulator(trace(rows, n_models), ColdStarts(np.array([cold_s]), n_models, 0)).run(
        DemandPlanner(n_models, settings))
    return result.wait, result.gpu_seconds


def test_a_client_calling_every_two_hours_is_served_warm_once_its_gaps_are_learned() -> None:
    period, days = 7200.0, 3
    rows = [(k * period, 10.0, 0) for k in range(int(days * 86400 / period))]
    alone = PlannerSettings(seasonal=False, cross=False, hazard=True)
    wait, gpu = served_warm(rows, 1, alone)
    late = wait[12:]  # after the first day
    assert np.mean(late <= 5.0) >= 0.9
    assert gpu < 0.5 * (rows[-1][0] + 10.0)  # up for a fraction of the time, not always on
    # the recent rate alone has long forgotten the last call when the next one comes: a cold start every time
    wait_without, _ = served_warm(rows, 1, PlannerSettings(seasonal=False, cross=False, hazard=False))
    assert np.mean(wait_without[12:] > 5.0) == 1.0


def days_up_after_its_last_call(settings: PlannerSettings) -> tuple[float, bool]:
    """A deployment called every 10 minutes for a day, then never again: how long after the last call it is
    first released, and whether it stays released over the next three days."""
    planner = DemandPlanner(1, settings)
    t = 0.0
    while t < 86400:
        planner.decide(observation(t, [1 if t % 600 == 0 else 0]))
        t += 15
    last = t - 15
    decided = []
    while t < last + 3 * 86400:
        decided.append((t, int(planner.decide(observation(t, [0]))[0])))
        t += 15
    released = next((at for at, d in decided if d == 0), math.inf)
    return (released - last) / 86400, all(d == 0 for at, d in decided if at >= released)


@pytest.mark.parametrize("hazard", [False, True])
def test_a_deployment_that_stops_being_called_is_released_and_stays_released(hazard: bool) -> None:
    up, stays = days_up_after_its_last_call(PlannerSettings(hazard=hazard))
    assert up < 1 / 24 and stays
    # without the gate, yesterday's busy hours keep calling it back: up for all three days
    assert days_up_after_its_last_call(PlannerSettings(hazard=hazard, seasonal_gate=False)) == (math.inf, True)


def test_a_deployment_called_right_after_another_is_warmed_by_the_others_call() -> None:
    rng = np.random.default_rng(5)
    rows: list[tuple[float, float, int]] = []
    t = 0.0
    while t < 4 * 86400:  # a user calls model 0, then model 1 90 s later, at random times, ~every 3 hours
        t += float(rng.exponential(3 * 3600))
        rows += [(round(t), 20.0, 0), (round(t) + 90, 20.0, 1)]
    settings = PlannerSettings(seasonal=False)
    wait, _ = served_warm(rows, 2, settings)
    second = wait[1::2]
    assert np.mean(second[5:] <= 5.0) >= 0.8
    wait_without, _ = served_warm(rows, 2, PlannerSettings(seasonal=False, cross=False))
    assert np.mean(wait_without[1::2][5:] <= 5.0) <= 0.4


def test_the_learned_lead_is_what_warms_a_deployment_a_pair_seen_once_in_many_calls_does_not() -> None:
    planner = DemandPlanner(3, PlannerSettings(seasonal=False))
    t = 0.0
    for k in range(40):  # model 0 called alone every 2 h; once, model 2 woke 60 s after it
        planner.decide(observation(t, [1, 0, 0]))
        planner.decide(observation(t + 60, [0, 0, 1 if k == 3 else 0]))
        t += 7200
    planner.decide(observation(t, [1, 0, 0]))
    rate = planner._cross_rate(t + 15)
    assert rate[2] == pytest.approx(1 / 41 / 120)  # once in 41 calls, spread over the first lag bin
    assert rate[1] == 0.0
