"""The replica simulator's semantics on hand-made traces with known answers, and the baselines."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.autoscale.baselines import Reactive, warm_one
from evaluation.autoscale.replay import ColdStarts, ReplicaSimulator, oracle
from gpuops.autoscale.observation import CycleObservation
from simulator.request_trace import IntArray
from tests.unit.autoscale_traces import trace


def cold(seconds: float, n_models: int = 1) -> ColdStarts:
    return ColdStarts(np.array([seconds]), n_models, seed=0)


class Fixed:
    name = "fixed"

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def decide(self, observation: CycleObservation) -> IntArray:
        return np.full(observation.in_flight.shape, self.replicas, dtype=np.int64)


def test_one_request_at_a_cold_model_waits_exactly_the_cold_start_under_reactive() -> None:
    result = ReplicaSimulator(trace([(0, 10, 0)]), cold(20.0)).run(Reactive(1))
    assert list(result.wait) == [20.0]
    assert result.gpu_seconds == 30.0  # started at 0, ready at 20, served until 30, the replay ends there
    assert result.replica_starts == 1


def test_an_arrival_between_cycles_waits_for_the_next_cycle_then_the_cold_start() -> None:
    result = ReplicaSimulator(trace([(5, 10, 0)]), cold(20.0)).run(Reactive(1))
    assert list(result.wait) == [30.0]  # seen at the cycle at 15, ready at 35


def test_reactive_keeps_a_replica_300_s_after_the_last_work_then_scales_to_zero() -> None:
    t = trace([(0, 10, 0), (200, 30, 0), (1005, 10, 0)])
    result = ReplicaSimulator(t, cold(20.0)).run(Reactive(1))
    assert list(result.wait) == [20.0, 0.0, 20.0]
    # in flight at the cycles 210 and 225, so kept to 525 and stopped at 540; then 1005 to 1035
    assert result.gpu_seconds == 540.0 + 30.0
    assert result.replica_starts == 2


def test_warm_one_keeps_every_model_up_from_the_first_cycle() -> None:
    t = trace([(0, 10, 0), (200, 30, 0), (1005, 10, 0)], n_models=2)
    result = ReplicaSimulator(t, cold(20.0, 2)).run(warm_one(2))
    assert list(result.wait) == [20.0, 0.0, 0.0]
    assert result.gpu_seconds == 2 * 1015.0  # two models, each warm from 0 to the end (1015)


def test_requests_of_a_model_are_served_fifo_one_at_a_time_per_replica() -> None:
    t = trace([(0, 10, 0), (0, 10, 0), (1, 10, 0)])
    result = ReplicaSimulator(t, cold(20.0)).run(Fixed(1))
    assert list(result.wait) == [20.0, 30.0, 39.0]
    two = ReplicaSimulator(t, cold(20.0)).run(Fixed(2))
    assert list(two.wait) == [20.0, 20.0, 29.0]


def test_models_do_not_share_replicas() -> None:
    t = trace([(0, 10, 0), (30, 10, 1)], n_models=2)
    result = ReplicaSimulator(t, cold(20.0, 2)).run(Reactive(2))
    assert list(result.wait) == [20.0, 20.0]


def test_scaling_down_stops_loading_replicas_first_and_never_a_busy_one() -> None:
    class UpThenDown:
        name = "up-then-down"

        def decide(self, observation: CycleObservation) -> IntArray:
            age = observation.now - t.arrival[0]
            return np.array([3 if age < 15 else 1 if age < 45 else 0], dtype=np.int64)

    t = trace([(0, 100, 0)])
    result = ReplicaSimulator(t, cold(20.0)).run(UpThenDown())
    # three start at 0; at 15 two of them, still loading, stop (15 s each); at 45 the last is busy and stays
    assert list(result.wait) == [20.0]
    assert result.gpu_seconds == 120.0 + 2 * 15.0


def test_cold_starts_are_the_same_draws_under_every_policy() -> None:
    draws = ColdStarts(np.array([5.0, 10.0, 40.0]), 2, seed=7)
    again = ColdStarts(np.array([5.0, 10.0, 40.0]), 2, seed=7)
    first = [draws.draw(1, k) for k in range(300)]
    assert [again.draw(1, k) for k in reversed(range(300))][::-1] == first
    assert set(first) == {5.0, 10.0, 40.0}


def test_the_oracle_serves_everyone_at_once_and_holds_a_replica_only_across_short_gaps() -> None:
    t = trace([(0, 10, 0), (200, 30, 0), (1005, 10, 0), (1020, 10, 0), (1020, 5, 0)])
    result = oracle(t, cold(20.0))
    assert list(result.wait) == [0.0] * 5
    # 20+10, restart 20+30, restart 20+10, the gap 1015..1020 kept (5+10), a second replica 20+5
    assert result.gpu_seconds == pytest.approx(30 + 50 + 30 + 15 + 25)
    assert result.replica_starts == 4


def test_the_summary_reports_hours_percentiles_and_the_share_over_5_s() -> None:
    t = trace([(0, 10, 0), (200, 30, 0), (1005, 10, 0)])
    s = ReplicaSimulator(t, cold(20.0)).run(Reactive(1)).summary()
    assert s["gpu_hours"] == round(570 / 3600, 2)
    assert s["wait_p50_s"] == 20.0 and s["share_wait_over_5s"] == round(2 / 3, 4)


def test_a_policy_that_leaves_requests_waiting_forever_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="left 1 request"):
        ReplicaSimulator(trace([(0, 10, 0)]), cold(20.0)).run(Fixed(0))
