"""The service's own Prometheus metrics, on a registry of its own (never the process-global one, so
tests and several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _StoreCollector(Collector):
    """Reads incident counts from the store at scrape time, so every process reports the same truth."""

    def __init__(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("gpuops_incidents", "Incidents in the store by status and severity.",
                                   labels=["status", "severity"])
        up = GaugeMetricFamily("gpuops_store_up", "1 when the store answered the last scrape.")
        try:
            counts = self._counts()
        except Exception:  # the scrape must still answer when the database is down
            up.add_metric([], 0.0)
            yield up
            return
        for (status, severity), n in sorted(counts.items()):
            family.add_metric([status, severity], float(n))
        up.add_metric([], 1.0)
        yield family
        yield up


class ServiceMetrics:
    """Counters and histograms the service updates, plus the store collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter("gpuops_http_requests", "HTTP requests served.",
                                     ["method", "route", "status"], registry=self.registry)
        self.http_latency = Histogram("gpuops_http_request_duration_seconds", "HTTP request latency.",
                                      ["route"], registry=self.registry)
        self.detection_cycles = Counter("gpuops_detection_cycles", "Detection cycles run.", ["outcome"],
                                        registry=self.registry)
        self.actions = Counter("gpuops_actions", "Actions by runbook and final status.",
                               ["runbook", "status"], registry=self.registry)
        self.desired_replicas = Gauge("gpuops_desired_replicas",
                                      "Replicas gpuops' scaler plans for an inference Deployment, for an HPA or "
                                      "KEDA that owns it to follow.", ["namespace", "deployment"],
                                      registry=self.registry)

    def publish_desired_replicas(self, plan: Mapping[tuple[str, str], int]) -> None:
        """Replace the published plan: Deployments no longer planned disappear from /metrics."""
        self.desired_replicas.clear()
        for (namespace, deployment), replicas in sorted(plan.items()):
            self.desired_replicas.labels(namespace=namespace, deployment=deployment).set(replicas)

    def watch_store(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.registry.register(_StoreCollector(counts))
