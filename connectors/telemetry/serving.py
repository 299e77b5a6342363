"""Demand on inference Deployments, as vLLM's metrics show it: requests in flight (running + waiting) and the
requests served so far (a counter), per (namespace, deployment), and the requests running on each replica pod
(which replicas a scale-down should spare). Two adapters: Prometheus (PromQL, one query
per quantity for the whole fleet) and the exporters scraped directly (the demo's twin). A reading that cannot
be trusted raises TelemetryBadResponse naming the series, so the autoscaler acts on nothing rather than on a
guess."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from connectors.telemetry.errors import TelemetryBadResponse, TelemetryError, TelemetryUnavailable
from connectors.telemetry.prometheus import PrometheusTelemetry

log = logging.getLogger(__name__)

DeploymentKey = tuple[str, str]  # (namespace, deployment)
RUNNING_METRIC = "vllm:num_requests_running"
IN_FLIGHT_METRICS = (RUNNING_METRIC, "vllm:num_requests_waiting")
COMPLETED_METRIC = "vllm:request_success_total"


@dataclass(frozen=True)
class DemandSample:
    """At `ts`: requests running or waiting, and requests served since the servers started, per Deployment; and
    where known, the requests running on each of its pods (`busy`: only the pods running one or more)."""

    ts: float
    in_flight: Mapping[DeploymentKey, float]
    completed: Mapping[DeploymentKey, float]
    busy: Mapping[DeploymentKey, Mapping[str, int]] = field(default_factory=dict)


class ServingDemand(Protocol):
    """Where the autoscaler reads demand."""

    def sample(self, now: float) -> DemandSample:
        """The latest values at `now`."""
        ...

    def history(self, start: float, end: float, step: float) -> list[DemandSample]:
        """Samples every `step` seconds over [start, end] (what is known of them; empty when nothing is)."""
        ...

    def query_one(self, query: str, now: float) -> float | None:
        """One Deployment's own query (its annotation): the single value it returns, None without a series."""
        ...


def _value(labels: Mapping[str, str], value: Any, what: str) -> tuple[DeploymentKey, float]:
    namespace, deployment = labels.get("namespace"), labels.get("deployment")
    if not namespace or not deployment:
        raise TelemetryBadResponse(
            f"{what}: a series without `namespace` and `deployment` labels ({dict(labels)}); the query must keep "
            "them (sum by (namespace, deployment) (...))")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise TelemetryBadResponse(f"{what}: {namespace}/{deployment} has value {value!r}, not a number") from exc
    if not math.isfinite(number) or number < 0:
        raise TelemetryBadResponse(f"{what}: {namespace}/{deployment} has value {number!r}; demand is a finite "
                                   "count >= 0")
    return (namespace, deployment), number


def _busy(busy: dict[DeploymentKey, dict[str, int]], key: DeploymentKey, pod: str | None, value: float) -> None:
    if pod and value >= 1:
        pods = busy.setdefault(key, {})
        pods[pod] = pods.get(pod, 0) + round(value)


class PrometheusServingDemand:
    """Demand through PromQL: `in_flight_query` and `completed_query` each return one series per Deployment;
    `running_by_pod_query` (optional) one per replica pod, labelled `pod` too."""

    def __init__(self, prometheus: PrometheusTelemetry, *, in_flight_query: str, completed_query: str,
                 running_by_pod_query: str | None = None) -> None:
        self.prometheus = prometheus
        self.in_flight_query = in_flight_query
        self.completed_query = completed_query
        self.running_by_pod_query = running_by_pod_query

    def _vector(self, query: str, start: float, end: float, step: float) -> dict[DeploymentKey, list[tuple[float,
                                                                                                           float]]]:
        out: dict[DeploymentKey, list[tuple[float, float]]] = {}
        for item in self.prometheus.query_range(query, start, end, step):
            if not isinstance(item, dict) or not isinstance(item.get("values"), list):
                raise TelemetryBadResponse(f"Prometheus: a series of {query!r} lacks metric/values")
            for pair in item["values"]:
                try:
                    ts, raw = float(pair[0]), pair[1]
                except (TypeError, ValueError, IndexError) as exc:
                    raise TelemetryBadResponse(f"Prometheus: {query!r} returned the sample {pair!r}") from exc
                key, value = _value(item.get("metric") or {}, raw, f"query {query!r}")
                out.setdefault(key, []).append((ts, value))
        return out

    def sample(self, now: float) -> DemandSample:
        in_flight = self._vector(self.in_flight_query, now, now, 1.0)
        completed = self._vector(self.completed_query, now, now, 1.0)
        return DemandSample(now, {k: v[-1][1] for k, v in in_flight.items()},
                            {k: v[-1][1] for k, v in completed.items()}, self._running_by_pod(now))

    def _running_by_pod(self, now: float) -> dict[DeploymentKey, dict[str, int]]:
        """Busy pods per Deployment, or none known: a query that fails or returns a malformed series only costs
        the scale-down its choice of pods (Kubernetes then picks), never the cycle."""
        busy: dict[DeploymentKey, dict[str, int]] = {}
        if not self.running_by_pod_query:
            return busy
        try:
            for item in self.prometheus.query_range(self.running_by_pod_query, now, now, 1.0):
                if not isinstance(item, dict):
                    raise TelemetryBadResponse(f"Prometheus: a series of {self.running_by_pod_query!r} is {item!r}")
                labels, values = item.get("metric") or {}, item.get("values")
                if not values:
                    continue
                key, value = _value(labels, values[-1][1], f"query {self.running_by_pod_query!r}")
                _busy(busy, key, labels.get("pod"), value)
        except (TelemetryError, TypeError, IndexError, AttributeError) as exc:
            log.warning("requests running per pod unavailable (%s); a scale-down lets Kubernetes pick the pods",
                        exc)
            return {}
        return busy

    def history(self, start: float, end: float, step: float) -> list[DemandSample]:
        if end <= start:
            return []
        in_flight = self._vector(self.in_flight_query, start, end, step)
        completed = self._vector(self.completed_query, start, end, step)
        times = sorted({ts for series in completed.values() for ts, _ in series})
        by_time_in = {(k, ts): v for k, series in in_flight.items() for ts, v in series}
        by_time_done = {(k, ts): v for k, series in completed.items() for ts, v in series}
        keys = set(in_flight) | set(completed)
        return [DemandSample(ts, {k: by_time_in[(k, ts)] for k in keys if (k, ts) in by_time_in},
                             {k: by_time_done[(k, ts)] for k in keys if (k, ts) in by_time_done}) for ts in times]

    def query_one(self, query: str, now: float) -> float | None:
        result = self.prometheus.query_range(query, now, now, 1.0)
        if not result:
            return None
        if len(result) > 1:
            raise TelemetryBadResponse(f"query {query!r} returned {len(result)} series; a Deployment's own query "
                                       "must return one (wrap it in sum(...))")
        values = result[0].get("values") if isinstance(result[0], dict) else None
        if not values:
            return None
        _, number = _value({"namespace": "-", "deployment": "-"}, values[-1][1], f"query {query!r}")
        return number


class ScrapedServingDemand:
    """Demand from the servers' /metrics scraped directly (vLLM's names; `namespace` and `deployment` labels on
    each series), summed per Deployment. Keeps the samples it took (`keep_s`) as its history."""

    def __init__(self, urls: Sequence[str], *, clock: Callable[[], float] = time.time, keep_s: float = 8 * 86400,
                 timeout_s: float = 5.0) -> None:
        self.urls = list(urls)
        self.clock = clock
        self.keep_s = keep_s
        self._http = httpx.Client(timeout=timeout_s)
        self._lock = threading.Lock()
        self._kept: deque[DemandSample] = deque()

    def close(self) -> None:
        self._http.close()

    def ingest(self, text: str, ts: float) -> DemandSample:
        """Parse one exposition body taken at `ts` and keep it."""
        return self.keep(parse_exposition(text, ts))

    def keep(self, sample: DemandSample) -> DemandSample:
        """Keep a sample read elsewhere (the demo's yesterday, recorded from the twin without its text)."""
        ts = sample.ts
        with self._lock:
            self._kept.append(sample)
            while self._kept and self._kept[0].ts < ts - self.keep_s:
                self._kept.popleft()
        return sample

    def sample(self, now: float) -> DemandSample:
        texts = []
        for url in self.urls:
            try:
                response = self._http.get(url)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise TelemetryUnavailable(f"cannot scrape {url}: {exc}") from exc
            texts.append(response.text)
        return self.ingest("\n".join(texts), now)

    def history(self, start: float, end: float, step: float) -> list[DemandSample]:
        with self._lock:
            kept = [s for s in self._kept if start <= s.ts <= end]
        out: list[DemandSample] = []
        for s in kept:  # at most one sample per step
            if not out or s.ts >= out[-1].ts + step - 1e-6:
                out.append(s)
        return out

    def query_one(self, query: str, now: float) -> float | None:
        raise TelemetryBadResponse(f"a Deployment's own query ({query!r}) needs Prometheus: set "
                                   "GPUOPS_PROMETHEUS_URL, or remove the annotation")


def parse_exposition(text: str, ts: float) -> DemandSample:
    """vLLM's in-flight and served counts per Deployment from a Prometheus text exposition."""
    in_flight: dict[DeploymentKey, float] = {}
    completed: dict[DeploymentKey, float] = {}
    busy: dict[DeploymentKey, dict[str, int]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError) as exc:
        raise TelemetryBadResponse(f"the scraped /metrics is not a Prometheus exposition: {exc}") from exc
    for family in families:
        for s in family.samples:
            if s.name in IN_FLIGHT_METRICS:
                target = in_flight
            elif s.name == COMPLETED_METRIC:
                target = completed
            else:
                continue
            key, value = _value(s.labels, s.value, s.name)
            target[key] = target.get(key, 0.0) + value
            if s.name == RUNNING_METRIC:
                _busy(busy, key, s.labels.get("pod"), value)
    return DemandSample(ts, in_flight, completed, busy)


def deployments_of(samples: Iterable[DemandSample]) -> set[DeploymentKey]:
    return {k for s in samples for k in (*s.in_flight, *s.completed)}
