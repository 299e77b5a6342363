"""The scaler on live readings, and its plan published as gpuops_desired_replicas on the service's metrics."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from gpuops.autoscale.live import DemandReading, LiveScaler
from gpuops.autoscale.planner import PlannerSettings
from gpuops.service_metrics import ServiceMetrics

SD = ("serving", "sd-m0002")
LLM = ("serving", "llm-small")


def test_a_busy_deployment_is_planned_replicas_and_an_idle_one_none() -> None:
    scaler = LiveScaler([SD, LLM], PlannerSettings(warm_value_s=600))
    plan = scaler.cycle(0.0, {SD: DemandReading(arrivals=5, in_flight=3, replicas=1),
                              ("other", "unknown"): DemandReading(9, 9, 9)}, cold_starts=[(SD, 30.0)])
    assert plan[SD] > 3 and plan[LLM] == 0
    assert set(plan) == {SD, LLM}


def test_a_deployment_is_listed_once() -> None:
    with pytest.raises(ValueError, match="listed once"):
        LiveScaler([SD, SD])


def test_the_plan_is_published_and_replaced_on_metrics() -> None:
    metrics = ServiceMetrics()
    metrics.publish_desired_replicas({SD: 3, LLM: 0})
    text = generate_latest(metrics.registry).decode()
    assert 'gpuops_desired_replicas{deployment="sd-m0002",namespace="serving"} 3.0' in text
    assert 'gpuops_desired_replicas{deployment="llm-small",namespace="serving"} 0.0' in text
    metrics.publish_desired_replicas({SD: 1})
    text = generate_latest(metrics.registry).decode()
    assert 'gpuops_desired_replicas{deployment="sd-m0002",namespace="serving"} 1.0' in text
    assert "llm-small" not in text
