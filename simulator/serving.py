"""Inference Deployments driven by a request trace: each replica is a pod on its GPUs that loads its model (a cold
start: the pod turns Ready `cold_start` after it was created) and then serves one request at a time; requests wait
FIFO per Deployment in front of it (a gateway's queue), so a Deployment scaled to zero still shows its demand.

What the twin exposes per Deployment uses vLLM's metric names: `vllm:num_requests_running` per replica,
`vllm:num_requests_waiting` for the queue and `vllm:request_success_total` for the requests served, each with
`namespace`, `deployment` and `model_name` (and `pod` for a replica). The trace is generated and seeded: a base
Poisson rate and, every day, a surge at a given time of day."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.durations import Duration
from simulator.kube.state import START_SECONDS_ANNOTATION, KubeState

DAY = 86400.0
AUTOSCALE_LABEL = "gpuops.io/autoscale"
MIN_REPLICAS_ANNOTATION = "gpuops.io/min-replicas"
MAX_REPLICAS_ANNOTATION = "gpuops.io/max-replicas"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Surge(_Strict):
    """Every day from `at` (time of day, UTC) for `duration`, `rate` more requests per hour, reached after `ramp`."""

    at: Duration
    duration: Duration
    rate: float = Field(gt=0, description="requests per hour on top of the base rate")
    ramp: Duration = 0.0

    @model_validator(mode="after")
    def _within_a_day(self) -> Surge:
        if self.at >= DAY or self.duration <= 0 or self.duration > DAY or self.ramp > self.duration:
            raise ValueError("a surge starts within the day (at < 24h), lasts (0, 24h] and ramps within its duration")
        return self


class ServedModel(_Strict):
    """One inference Deployment: its model, replicas, cold start, service time and traffic. `owner` says who
    scales it: gpuops (opted in with the `gpuops.io/autoscale` label), an HPA, or a KEDA ScaledObject."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=50)
    model: str = ""
    gpus_per_replica: int = Field(1, ge=1, le=8)
    replicas: int = Field(0, ge=0)
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(8, ge=0)
    cold_start: Duration = 40.0
    service_time: Duration = 20.0
    base_rate: float = Field(6.0, ge=0, description="requests per hour outside the surge")
    surge: Surge | None = None
    owner: Literal["gpuops", "hpa", "keda"] = "gpuops"

    @model_validator(mode="after")
    def _bounds(self) -> ServedModel:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"{self.name}: min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        if self.service_time <= 0:
            raise ValueError(f"{self.name}: service_time must be positive")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.name

    def rate_at(self, t: float) -> float:
        """Arrivals per second at unix time `t`."""
        rate = self.base_rate
        s = self.surge
        if s is not None:
            into = (t % DAY - s.at) % DAY
            if into < s.duration:
                rate += s.rate * (min(1.0, into / s.ramp) if s.ramp > 0 else 1.0)
        return rate / 3600.0


class ServingSpec(_Strict):
    """A scenario's `serving` section."""

    namespace: str = Field("serving", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    models: list[ServedModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ServingSpec:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("each served model's name may appear once")
        return self


def arrivals(model: ServedModel, start: float, end: float, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """Arrival times in [start, end) of a Poisson process with the model's rate (by thinning, seeded)."""
    peak = (model.base_rate + (model.surge.rate if model.surge else 0.0)) / 3600.0
    if peak <= 0 or end <= start:
        return np.zeros(0)
    n = rng.poisson(peak * (end - start))
    times = np.sort(rng.uniform(start, end, n))
    keep = rng.uniform(0, peak, n) < np.array([model.rate_at(float(t)) for t in times])
    return times[keep]


@dataclass
class _Replica:
    busy_until: float | None = None
    free_since: float = 0.0


@dataclass
class DeploymentServer:
    """One Deployment's queue and replicas, advanced between the twin's steps event by event."""

    spec: ServedModel
    namespace: str
    arrivals: np.ndarray[Any, Any]
    service_times: np.ndarray[Any, Any]
    replicas: dict[str, _Replica] = field(default_factory=dict)
    queue: deque[tuple[float, float]] = field(default_factory=deque)  # (arrival, service time)
    served: int = 0
    waits: list[tuple[float, float]] = field(default_factory=list)  # (arrival, seconds waited)
    _next: int = 0

    def advance(self, ready_pods: list[str], last: float, now: float) -> None:
        """Serve from `last` to `now` with the replicas Ready now (a replica that became Ready in between serves
        from `last`; one that vanished puts its request back at the head of the queue)."""
        for pod in [p for p in self.replicas if p not in ready_pods]:
            gone = self.replicas.pop(pod)
            if gone.busy_until is not None and gone.busy_until > last:
                self.queue.appendleft((last, float(self.spec.service_time)))
        for pod in ready_pods:
            self.replicas.setdefault(pod, _Replica(free_since=last))
        self._dispatch(last)  # a replica that just became Ready takes the head of the queue
        while True:
            busy = [(r.busy_until, name) for name, r in self.replicas.items()
                    if r.busy_until is not None and r.busy_until <= now]
            next_done = min(busy)[0] if busy else math.inf
            next_arrival = float(self.arrivals[self._next]) if self._next < len(self.arrivals) else math.inf
            if next_arrival > now and next_done > now:
                break
            if next_done <= next_arrival:
                for name in [n for t, n in busy if t == next_done]:
                    self.replicas[name].busy_until = None
                    self.replicas[name].free_since = next_done
                    self.served += 1
                self._dispatch(next_done)
            else:
                self.queue.append((next_arrival, float(self.service_times[self._next])))
                self._next += 1
                self._dispatch(next_arrival)

    def _dispatch(self, at: float) -> None:
        for name in sorted(self.replicas, key=lambda n: self.replicas[n].free_since):
            if not self.queue:
                return
            replica = self.replicas[name]
            if replica.busy_until is None:
                arrived, service = self.queue.popleft()
                replica.busy_until = at + service
                self.waits.append((arrived, at - arrived))

    def metrics(self, suffix: str) -> list[str]:
        base = f'namespace="{self.namespace}",deployment="{self.spec.name}",model_name="{self.spec.model_name}"'
        lines = [f'vllm:num_requests_running{{{base},pod="{pod}"}} {int(r.busy_until is not None)}{suffix}'
                 for pod, r in sorted(self.replicas.items())]
        lines.append(f"vllm:num_requests_waiting{{{base}}} {len(self.queue)}{suffix}")
        lines.append(f'vllm:request_success_total{{{base},finished_reason="stop"}} {self.served}{suffix}')
        return lines


class InferenceServing:
    """The scenario's inference Deployments in the twin's cluster, and the trace that drives them."""

    def __init__(self, spec: ServingSpec, kube: KubeState, start: float, end: float, seed: int) -> None:
        self.spec = spec
        self.kube = kube
        self._last = start
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E7]))
        self.servers: dict[str, DeploymentServer] = {}
        for model in spec.models:
            times = arrivals(model, start, end, rng)
            service = rng.exponential(model.service_time, len(times))
            self.servers[model.name] = DeploymentServer(model, spec.namespace, times, np.maximum(service, 0.5))
            kube.add_deployment(served_deployment(model, spec.namespace) | {"spec": {
                **served_deployment(model, spec.namespace)["spec"], "replicas": 0}})
            if model.replicas:  # the first replicas load their model too
                kube.set_scale(spec.namespace, model.name, model.replicas)
            if model.owner == "hpa":
                kube.create_object("horizontalpodautoscalers", spec.namespace, hpa_for(model, spec.namespace))
            elif model.owner == "keda":
                kube.create_object("scaledobjects", spec.namespace, scaled_object_for(model, spec.namespace))

    def advance(self, now: float) -> None:
        """Serve every Deployment's requests up to `now` with the replicas the cluster has Ready."""
        pods, _ = self.kube.list_objects("pods", self.spec.namespace)
        ready: dict[str, list[str]] = {}
        for pod in pods:
            md = pod["metadata"]
            if "deletionTimestamp" in md:
                continue
            conditions = pod.get("status", {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                ready.setdefault((md.get("labels") or {}).get("app", ""), []).append(md["name"])
        for name, server in self.servers.items():
            server.advance(sorted(ready.get(name, [])), self._last, now)
        self._last = now

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per Deployment: requests in flight (running + waiting) and requests served so far; what the metrics
        text says, without the text."""
        return {name: (sum(1 for r in server.replicas.values() if r.busy_until is not None) + len(server.queue),
                       server.served) for name, server in self.servers.items()}

    def metrics_text(self, suffix: str = "") -> str:
        lines = ["# HELP vllm:num_requests_running Number of requests in model execution batches.",
                 "# TYPE vllm:num_requests_running gauge",
                 "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
                 "# TYPE vllm:num_requests_waiting gauge",
                 "# HELP vllm:request_success_total Count of successfully processed requests.",
                 "# TYPE vllm:request_success_total counter"]
        by_metric: dict[str, list[str]] = {}
        for server in self.servers.values():
            for line in server.metrics(suffix):
                by_metric.setdefault(line.split("{", 1)[0], []).append(line)
        out = lines[:2] + by_metric.get("vllm:num_requests_running", []) + lines[2:4] + \
            by_metric.get("vllm:num_requests_waiting", []) + lines[4:] + by_metric.get("vllm:request_success_total", [])
        return "\n".join(out) + "\n"


def served_deployment(model: ServedModel, namespace: str) -> dict[str, Any]:
    """The apps/v1 Deployment of a served model, opted in to gpuops' autoscaling (where an HPA or KEDA owns it,
    gpuops only publishes its plan for them)."""
    labels = {"app": model.name, AUTOSCALE_LABEL: "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": model.name, "namespace": namespace, "labels": labels,
                     "annotations": {MIN_REPLICAS_ANNOTATION: str(model.min_replicas),
                                     MAX_REPLICAS_ANNOTATION: str(model.max_replicas)}},
        "spec": {
            "replicas": model.replicas,
            "selector": {"matchLabels": {"app": model.name}},
            "template": {
                "metadata": {"labels": {"app": model.name},
                             "annotations": {START_SECONDS_ANNOTATION: f"{model.cold_start:g}"}},
                "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.3",
                                         "resources": {"limits": {"nvidia.com/gpu": str(model.gpus_per_replica)}}}]},
            },
        },
    }


def hpa_for(model: ServedModel, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": model.name, "namespace": namespace},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": model.name},
                     "minReplicas": max(1, model.min_replicas), "maxReplicas": max(1, model.max_replicas)}}


def scaled_object_for(model: ServedModel, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": model.name, "namespace": namespace},
            "spec": {"scaleTargetRef": {"name": model.name}, "minReplicaCount": model.min_replicas,
                     "maxReplicaCount": model.max_replicas}}
