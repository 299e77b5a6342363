"""The autoscaler's demand through a real Prometheus scraping the twin's vLLM series: the default PromQL per
Deployment, a Deployment's own query, history for the planner's start, and what is refused (a query Prometheus
rejects, series without the Deployment's labels), with the cycle acting on nothing when demand cannot be read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.telemetry.errors import TelemetryBadResponse, TelemetryQueryError
from connectors.telemetry.prometheus import PrometheusTelemetry
from connectors.telemetry.serving import PrometheusServingDemand
from gpuops.autoscale.settings import (
    DEFAULT_COMPLETED_QUERY,
    DEFAULT_IN_FLIGHT_QUERY,
    DEFAULT_RUNNING_BY_POD_QUERY,
    AutoscaleSettings,
)
from gpuops.autoscale.wiring import autoscaler_for
from gpuops.config import Settings
from gpuops.execution.service import ExecutionDeps
from gpuops.store import migrate
from gpuops.wiring import bootstrap
from simulator.scenario import scenario_from_dict
from simulator.server import ServedTwin, serve_twin
from simulator.twin import Twin
from tests.prometheus_server import PrometheusServer, running_prometheus
from tests.waiting import wait_for


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Twin, ServedTwin, PrometheusServer]]:
    twin = Twin(scenario_from_dict({
        "name": "autoscale-prometheus", "seed": 9, "duration": "6h", "step": "15s", "workloads": [],
        "fleet": {"nodes": 1, "gpus_per_node": 8},
        "serving": {"models": [{"name": "llm-a", "replicas": 1, "base_rate": 900, "service_time": "40s"},
                               {"name": "llm-b", "replicas": 1, "base_rate": 60, "service_time": "5s"}]},
    }, source="test"))
    twin.advance_to(twin.t + 600)
    served = serve_twin(twin)
    with running_prometheus(tmp_path / "prom", targets=[served.url.removeprefix("http://")]) as prom:
        def scraped() -> bool:
            answer = httpx.get(f"{prom.url}/api/v1/query", params={"query": "vllm:request_success_total"}).json()
            return len(answer["data"]["result"]) == 2

        wait_for(scraped, timeout=30, interval=0.2, message="Prometheus has not scraped the twin's vLLM series")
        # a query's time goes to Prometheus in whole seconds: wait until "now" lies after the first scrape
        wait_for(lambda: len(demand(prom).sample(time.time()).in_flight) == 2, timeout=10, interval=0.2,
                 message="the first scrape is not visible at the current second")
        yield twin, served, prom
    served.stop()


def demand(prom: PrometheusServer, **queries: str) -> PrometheusServingDemand:
    return PrometheusServingDemand(PrometheusTelemetry(prom.url, retries=0),
                                   in_flight_query=queries.get("in_flight", DEFAULT_IN_FLIGHT_QUERY),
                                   completed_query=queries.get("completed", DEFAULT_COMPLETED_QUERY),
                                   running_by_pod_query=queries.get("running_by_pod"))


def test_the_default_queries_read_each_deployments_demand(fleet: Any) -> None:
    twin, _, prom = fleet
    assert twin.serving is not None
    counts = twin.serving.counts()
    sample = demand(prom).sample(time.time())
    assert sample.in_flight == {("serving", name): float(n) for name, (n, _) in counts.items()}
    assert sample.completed == {("serving", name): float(n) for name, (_, n) in counts.items()}
    assert counts["llm-a"][0] > 1  # more requests than its one replica: the queue counts too
    own = demand(prom).query_one('sum(vllm:num_requests_waiting{deployment="llm-a"})', time.time())
    assert own == float(len(twin.serving.servers["llm-a"].queue))
    time.sleep(2.5)
    history = demand(prom).history(time.time() - 3, time.time(), 1.0)
    assert len(history) >= 2 and all(s.completed == sample.completed for s in history)


def test_the_replicas_serving_are_read_and_a_failing_pod_query_costs_only_that(
        fleet: Any, caplog: pytest.LogCaptureFixture) -> None:
    twin, _, prom = fleet
    assert twin.serving is not None
    serving = {("serving", name): {pod: 1 for pod, r in server.replicas.items() if r.busy_until is not None}
               for name, server in twin.serving.servers.items()}
    sample = demand(prom, running_by_pod=DEFAULT_RUNNING_BY_POD_QUERY).sample(time.time())
    assert sample.busy == {key: pods for key, pods in serving.items() if pods}
    assert sample.busy[("serving", "llm-a")]  # its one replica is busy (more requests than it serves)
    broken = demand(prom, running_by_pod="sum by (pod (vllm:num_requests_running").sample(time.time())
    assert broken.busy == {} and broken.in_flight == sample.in_flight  # the cycle still has its demand
    assert "requests running per pod unavailable" in caplog.text


def test_what_cannot_be_trusted_is_refused_with_its_reason(fleet: Any) -> None:
    _, _, prom = fleet
    with pytest.raises(TelemetryQueryError, match="Prometheus refused query"):
        demand(prom, in_flight="sum by (deployment (vllm:num_requests_running").sample(time.time())
    with pytest.raises(TelemetryBadResponse, match="without `namespace` and `deployment` labels"):
        demand(prom, completed="sum(vllm:request_success_total)").sample(time.time())
    with pytest.raises(TelemetryBadResponse, match="returned 2 series"):
        demand(prom).query_one("vllm:num_requests_waiting", time.time())
    with pytest.raises(TelemetryBadResponse, match="finite count"):
        demand(prom, in_flight='-1 * sum by (namespace, deployment) (vllm:num_requests_waiting)').sample(time.time())


def test_the_cycle_on_prometheus_scales_and_on_a_bad_query_does_nothing(fleet: Any, sqlite_url: str) -> None:
    twin, served, prom = fleet
    migrate.upgrade(sqlite_url)
    container = bootstrap(Settings(database_url=sqlite_url, kube_api_url=served.url, kube_verify_ssl=False,
                                   dry_run=False, prometheus_url=prom.url))
    try:
        deps = ExecutionDeps(catalogue=container.catalogue, cluster=container.cluster, policy=container.policy,
                             runbook_settings=container.runbook_settings, clock=time.time, sleep=lambda s: None)
        broken = autoscaler_for(container, deps, settings=AutoscaleSettings(
            enabled=True, history_seconds=0, in_flight_query="sum(vllm:num_requests_running)"))
        report = broken.run(time.time())
        assert report.deployments == [] and report.actions == []
        assert "without `namespace` and `deployment` labels" in report.errors[0]
        assert twin.kube.get_object("deployments", "serving", "llm-a")["spec"]["replicas"] == 1
        working = autoscaler_for(container, deps, settings=AutoscaleSettings(enabled=True, history_seconds=0))
        report = working.run(time.time() + 15)  # the next period (the failed one still claimed its own)
        assert report.errors == []
        row = report.of("serving/llm-a")
        assert row is not None and row.desired is not None and row.desired > 8
        # bounded by its gpuops.io/max-replicas, through the scale subresource
        assert twin.kube.get_object("deployments", "serving", "llm-a")["spec"]["replicas"] == 8
    finally:
        container.close()
