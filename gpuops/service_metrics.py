"""The service's own Prometheus metrics, on a registry of its own (never the process-global one, so
tests and several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpuops.store.models import Action, DetectorState, NotificationOutbox


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


@dataclass
class StoreActivity:
    """What the store says gpuops did: actions by (runbook, status), and per detection shard the cycles run and
    the data time the last one reached."""

    actions: dict[tuple[str, str], int] = field(default_factory=dict)
    cycles: dict[str, int] = field(default_factory=dict)
    last_data_ts: dict[str, float] = field(default_factory=dict)
    notifications: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, status) in the outbox


def store_activity(session: Session) -> StoreActivity:
    """Read the StoreActivity (two small aggregate queries)."""
    actions = {(runbook, status): int(n) for runbook, status, n in session.execute(
        select(Action.runbook, Action.status, func.count()).group_by(Action.runbook, Action.status))}
    states = session.execute(select(DetectorState.shard, DetectorState.cycles, DetectorState.last_ts)).all()
    notifications = {(channel, status): int(n) for channel, status, n in session.execute(
        select(NotificationOutbox.channel, NotificationOutbox.status, func.count())
        .group_by(NotificationOutbox.channel, NotificationOutbox.status))}
    return StoreActivity(actions=actions, cycles={shard: int(n or 0) for shard, n, _ in states},
                         last_data_ts={shard: float(ts or 0.0) for shard, _, ts in states},
                         notifications=notifications)


class _ActivityCollector(Collector):
    """Actions and detection cycles read from the store at scrape time: workers that run them serve no /metrics,
    so a counter in their memory would never be scraped."""

    def __init__(self, read: Callable[[], StoreActivity]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        try:
            activity = self._read()
        except Exception:  # gpuops_store_up says the store is down; the scrape still answers
            return
        actions = GaugeMetricFamily("gpuops_actions", "Actions in the store by runbook and status.",
                                    labels=["runbook", "status"])
        for (runbook, status), n in sorted(activity.actions.items()):
            actions.add_metric([runbook, status], float(n))
        cycles = CounterMetricFamily("gpuops_detection_cycles", "Detection cycles run, per shard.", labels=["shard"])
        last = GaugeMetricFamily("gpuops_detection_last_data_timestamp_seconds",
                                 "The data time (Unix seconds) the last detection cycle of a shard reached.",
                                 labels=["shard"])
        for shard, n in sorted(activity.cycles.items()):
            cycles.add_metric([shard], float(n))
            last.add_metric([shard], activity.last_data_ts.get(shard, 0.0))
        notifications = GaugeMetricFamily(
            "gpuops_notifications", "Incident events to PagerDuty and the webhook in the outbox, by channel and "
            "status (pending: waiting for the receiver; failed: refused).", labels=["channel", "status"])
        for (channel, status), n in sorted(activity.notifications.items()):
            notifications.add_metric([channel, status], float(n))
        yield actions
        yield cycles
        yield last
        yield notifications


class ServiceMetrics:
    """Counters and histograms the service updates, plus the store collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter("gpuops_http_requests", "HTTP requests served.",
                                     ["method", "route", "status"], registry=self.registry)
        self.http_latency = Histogram("gpuops_http_request_duration_seconds", "HTTP request latency.",
                                      ["route"], registry=self.registry)
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

    def watch_activity(self, read: Callable[[], StoreActivity]) -> None:
        """Publish actions and detection cycles as the store holds them (see _ActivityCollector)."""
        self.registry.register(_ActivityCollector(read))
