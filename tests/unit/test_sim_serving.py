"""The twin's inference Deployments: replicas turn Ready after their cold start, serve one request at a time from
a FIFO queue per Deployment, and show it in vLLM's metric names; a malformed `serving` section is refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.telemetry.errors import TelemetryBadResponse
from connectors.telemetry.serving import parse_exposition
from simulator.scenario import ScenarioError, scenario_from_dict
from simulator.serving import DeploymentServer, ServedModel, arrivals
from simulator.twin import Twin


def scenario(models: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "serving", "duration": "2h", "step": "15s", "fleet": {"nodes": 1, "gpus_per_node": 8},
            "workloads": [], "serving": {"models": models}, **extra}


def test_requests_wait_in_order_for_the_replicas_and_each_replica_serves_one_at_a_time() -> None:
    spec = ServedModel(name="m", service_time=10)
    server = DeploymentServer(spec, "ns", np.array([1.0, 2.0, 3.0]), np.array([10.0, 10.0, 10.0]))
    server.advance([], 0.0, 5.0)  # no replica yet: all three wait
    assert len(server.queue) == 3 and server.served == 0
    server.advance(["m-1"], 5.0, 30.0)  # one replica from t=5: served at 5, 15, 25
    assert server.served == 2 and len(server.queue) == 0
    assert [round(w) for _, w in server.waits] == [4, 13, 22]  # FIFO: each waited for the one before it
    lines = server.metrics("")
    assert 'vllm:num_requests_running{namespace="ns",deployment="m",model_name="m",pod="m-1"} 1' in lines


def test_a_request_whose_replica_vanishes_is_served_again_and_its_wait_runs_on() -> None:
    spec = ServedModel(name="m", service_time=10)
    server = DeploymentServer(spec, "ns", np.array([0.0]), np.array([100.0]))
    server.advance(["m-1"], 0.0, 10.0)  # served from t=0 for its own 100 s
    assert server.waits == [(0.0, 0.0)]
    server.advance([], 10.0, 20.0)  # its replica is removed at t=10: the request goes back to the queue
    assert server.interruptions == [10.0] and len(server.queue) == 1
    server.advance(["m-2"], 20.0, 130.0)  # another replica from t=20 serves it again, in full
    assert server.waits == [(0.0, 20.0)]  # one request, which waited until the service that completed it
    assert server.served == 1 and server.replicas["m-2"].busy_until is None


def test_a_replica_is_ready_only_after_its_cold_start_and_the_exposition_reads_back() -> None:
    twin = Twin(scenario_from_dict(scenario([{"name": "llm", "replicas": 2, "cold_start": "60s"}]), source="t"))
    twin.advance_to(twin.t + 45)
    assert twin.serving is not None and twin.serving.servers["llm"].replicas == {}
    twin.advance_to(twin.t + 30)
    assert len(twin.serving.servers["llm"].replicas) == 2
    text = twin.serving_text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:request_success"} <= names
    sample = parse_exposition(text, twin.t)
    assert ("serving", "llm") in sample.in_flight and ("serving", "llm") in sample.completed
    assert sample.busy == {}  # both replicas idle
    server = twin.serving.servers["llm"]
    server.queue.append((twin.t, 600.0, None))
    twin.advance_to(twin.t + 15)
    busy = [pod for pod, r in server.replicas.items() if r.busy_until is not None]
    assert parse_exposition(twin.serving_text(), twin.t).busy == {("serving", "llm"): {busy[0]: 1}}
    dep = twin.kube.get_object("deployments", "serving", "llm")
    assert dep["metadata"]["labels"]["gpuops.io/autoscale"] == "true"


def test_the_daily_surge_raises_the_rate_in_its_window_only() -> None:
    spec = ServedModel(name="m", base_rate=0, surge={"at": "14h", "duration": "1h", "rate": 3600})
    rng = np.random.default_rng(0)
    times = arrivals(spec, 0.0, 2 * 86400.0, rng)
    hours = (times % 86400) // 3600
    assert set(hours.tolist()) == {14.0} and 6000 < len(times) < 8400


@pytest.mark.parametrize(("model", "message"), [
    ({"name": "m", "min_replicas": 3, "max_replicas": 1}, "min_replicas 3 exceeds max_replicas 1"),
    ({"name": "m", "surge": {"at": "25h", "duration": "1h", "rate": 5}}, "a surge starts within the day"),
    ({"name": "m", "owner": "someone"}, "owner"),
])
def test_a_malformed_serving_section_is_refused(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict(scenario([model]), source="t")


def test_an_exposition_without_deployment_labels_is_a_clear_error() -> None:
    with pytest.raises(TelemetryBadResponse, match="without `namespace` and `deployment` labels"):
        parse_exposition('vllm:num_requests_waiting{model_name="m"} 3\n', 0.0)
    with pytest.raises(TelemetryBadResponse, match="demand is a finite count"):
        parse_exposition('vllm:num_requests_waiting{namespace="n",deployment="d"} -1\n', 0.0)
