"""Inference Deployments driven by a request trace: each replica is a pod on its GPUs that loads its model (a cold
start: the pod turns Ready `cold_start` after it was created) and then serves one request at a time; requests wait
FIFO per Deployment in front of it (a gateway's queue), so a Deployment scaled to zero still shows its demand.

What the twin exposes per Deployment uses vLLM's metric names: `vllm:num_requests_running` per replica,
`vllm:num_requests_waiting` for the queue and `vllm:request_success_total` for the requests served, each with
`namespace`, `deployment` and `model_name` (and `pod` for a replica). The trace is generated and seeded (a base
Poisson rate and, every day, a surge at a given time of day), or replayed from a recorded request trace in
GenTD26's format (`replay:`): one Deployment per base model, each request at its recorded time for its recorded
GPU time, each replica's model load drawn from the recorded cold starts."""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.durations import Duration
from simulator.kube.state import START_SECONDS_ANNOTATION, KubeState
from simulator.request_trace import FloatArray, RequestTrace, read_cold_starts, read_requests

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


class ServingReplay(_Strict):
    """Deployments driven by a recorded request trace (GenTD26's `requests.csv.gz` format): one per base model,
    named `sd-<model id>`, owned by gpuops, from `min_replicas` (scaled to it at the start) to `max_replicas`.
    The trace's first arrival plus `skip` is the scenario's start; `models` keeps the busiest N base models of
    the replayed span (default: all). A replica's model load is drawn from `coldstarts` (observed loads, `value`
    in ms, GenTD26's `basemodel_update_latency.csv.gz` format), else it is `cold_start`. Paths are relative to
    the scenario file."""

    requests: str
    coldstarts: str | None = None
    cold_start: Duration = 40.0
    skip: Duration = 0.0
    models: int | None = Field(None, ge=1)
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(8, ge=1)


class ServingSpec(_Strict):
    """A scenario's `serving` section: generated `models`, a `replay`ed trace, or both."""

    namespace: str = Field("serving", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    models: list[ServedModel] = Field(default_factory=list)
    replay: ServingReplay | None = None

    @model_validator(mode="after")
    def _unique(self) -> ServingSpec:
        if not self.models and self.replay is None:
            raise ValueError("serving needs `models`, a `replay` of a request trace, or both")
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


Queued = tuple[float, float, int | None]  # (arrival, service time, its entry in `waits` when it was interrupted)


@dataclass
class _Replica:
    busy_until: float | None = None
    free_since: float = 0.0
    request: Queued | None = None  # the request it serves, with its entry in `waits`


@dataclass
class DeploymentServer:
    """One Deployment's queue and replicas, advanced between the twin's steps event by event."""

    spec: ServedModel
    namespace: str
    arrivals: np.ndarray[Any, Any]
    service_times: np.ndarray[Any, Any]
    replicas: dict[str, _Replica] = field(default_factory=dict)
    queue: deque[Queued] = field(default_factory=deque)
    served: int = 0
    # (arrival, seconds waited) per request: until the service that completed it began
    waits: list[tuple[float, float]] = field(default_factory=list)
    # when a request's replica vanished while serving it (the request is served again from the start)
    interruptions: list[float] = field(default_factory=list)
    _next: int = 0

    def advance(self, ready_pods: list[str], last: float, now: float) -> None:
        """Serve from `last` to `now` with the replicas Ready now (a replica that became Ready in between serves
        from `last`; one that vanished puts its request back at the head of the queue, and that request's wait
        runs on until it is served again)."""
        for pod in [p for p in self.replicas if p not in ready_pods]:
            gone = self.replicas.pop(pod)
            if gone.busy_until is not None and gone.busy_until > last and gone.request is not None:
                arrival, service, index = gone.request
                self.queue.appendleft((arrival, service, index))
                self.interruptions.append(last)
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
                    self.replicas[name].request = None
                    self.replicas[name].free_since = next_done
                    self.served += 1
                self._dispatch(next_done)
            else:
                self.queue.append((next_arrival, float(self.service_times[self._next]), None))
                self._next += 1
                self._dispatch(next_arrival)

    def _dispatch(self, at: float) -> None:
        for name in sorted(self.replicas, key=lambda n: self.replicas[n].free_since):
            if not self.queue:
                return
            replica = self.replicas[name]
            if replica.busy_until is None:
                arrived, service, index = self.queue.popleft()
                replica.busy_until = at + service
                if index is None:
                    index = len(self.waits)
                    self.waits.append((arrived, at - arrived))
                else:
                    self.waits[index] = (arrived, at - arrived)
                replica.request = (arrived, service, index)

    def metrics(self, suffix: str) -> list[str]:
        base = f'namespace="{self.namespace}",deployment="{self.spec.name}",model_name="{self.spec.model_name}"'
        lines = [f'vllm:num_requests_running{{{base},pod="{pod}"}} {int(r.busy_until is not None)}{suffix}'
                 for pod, r in sorted(self.replicas.items())]
        lines.append(f"vllm:num_requests_waiting{{{base}}} {len(self.queue)}{suffix}")
        lines.append(f'vllm:request_success_total{{{base},finished_reason="stop"}} {self.served}{suffix}')
        return lines


# ------------------------------------------------------------------------------------------ replayed traces


def _stamp(path: str) -> tuple[str, int, int]:
    """What a file's cached reading is keyed by: its path, modification time and size (a changed file is
    read again)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return path, -1, -1  # the reading says why
    return path, stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=4)
def _read_requests(stamp: tuple[str, int, int]) -> RequestTrace:
    return read_requests(Path(stamp[0]))


@lru_cache(maxsize=4)
def _read_cold_starts(stamp: tuple[str, int, int]) -> FloatArray:
    return read_cold_starts(Path(stamp[0]))


def _requests(path: str) -> RequestTrace:
    return _read_requests(_stamp(path))


def _cold_starts(path: str) -> FloatArray:
    return _read_cold_starts(_stamp(path))


def deployment_name(model_id: str) -> str:
    """The Deployment serving a recorded base model: `sd-` and the id in lower case, other characters as `-`."""
    return ("sd-" + re.sub(r"[^a-z0-9-]+", "-", model_id.lower()).strip("-")[:47]).rstrip("-")


@dataclass(frozen=True)
class ReplayedDeployment:
    model: ServedModel
    arrivals: FloatArray   # the twin's clock
    service: FloatArray


def replayed_deployments(replay: ServingReplay, start: float, end: float) -> list[ReplayedDeployment]:
    """The Deployments a replay makes for the twin's span [start, end): the trace's requests in the matching
    span of the trace, shifted to the twin's clock, per base model (the busiest `models` of them)."""
    trace = _requests(replay.requests)
    offset = float(trace.arrival[0]) + float(replay.skip) - start
    keep = (trace.arrival >= start + offset) & (trace.arrival < end + offset)
    if not keep.any():
        raise ValueError(f"{replay.requests}: no request in the replayed span (skip {replay.skip:g} s, "
                         f"{end - start:g} s long); the trace spans {trace.arrival[-1] - trace.arrival[0]:g} s")
    counts = np.bincount(trace.model[keep], minlength=len(trace.models))
    chosen = [int(m) for m in np.argsort(-counts, kind="stable") if counts[m] > 0][:replay.models or len(counts)]
    cold = float(np.median(_cold_starts(replay.coldstarts))) if replay.coldstarts else float(replay.cold_start)
    out = []
    for m in sorted(chosen):
        rows = keep & (trace.model == m)
        name = deployment_name(trace.models[m])
        served = ServedModel(name=name, model=trace.models[m], replicas=replay.min_replicas,
                             min_replicas=replay.min_replicas, max_replicas=replay.max_replicas, cold_start=cold,
                             base_rate=0.0)
        out.append(ReplayedDeployment(served, trace.arrival[rows] - offset, np.maximum(trace.service[rows], 0.5)))
    if len({d.model.name for d in out}) != len(out):
        raise ValueError(f"{replay.requests}: two base models map to one Deployment name")
    return out


def check_names(spec: ServingSpec, replayed: list[ReplayedDeployment]) -> None:
    """ValueError when a listed model takes the name of a replayed base model's Deployment."""
    clash = sorted({m.name for m in spec.models} & {d.model.name for d in replayed})
    if clash:
        raise ValueError(f"serving: {clash[0]} is both a listed model and a replayed base model")


def resolve_serving_paths(data: Any, folder: Path) -> Any:
    """A scenario's parsed YAML with `serving.replay`'s paths made absolute from `folder` (the file's)."""
    serving = data.get("serving") if isinstance(data, dict) else None
    if not isinstance(serving, dict) or not isinstance(serving.get("replay"), dict):
        return data
    replay = dict(serving["replay"])
    for key in ("requests", "coldstarts"):
        if isinstance(replay.get(key), str):
            replay[key] = str((folder / Path(replay[key]).expanduser()).resolve())
    return {**data, "serving": {**serving, "replay": replay}}


class InferenceServing:
    """The scenario's inference Deployments in the twin's cluster, and the trace that drives them."""

    def __init__(self, spec: ServingSpec, kube: KubeState, start: float, end: float, seed: int) -> None:
        self.spec = spec
        self.kube = kube
        self._last = start
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E7]))
        self.servers: dict[str, DeploymentServer] = {}
        driven: list[tuple[ServedModel, FloatArray, FloatArray]] = []
        for model in spec.models:
            times = arrivals(model, start, end, rng)
            service = rng.exponential(model.service_time, len(times))
            driven.append((model, times, np.maximum(service, 0.5)))
        self.loads: FloatArray | None = None  # the recorded model loads a replayed replica draws from
        self._replayed: set[str] = set()
        if spec.replay is not None:
            replayed = replayed_deployments(spec.replay, start, end)  # a TraceError is a ValueError
            check_names(spec, replayed)
            driven += [(d.model, d.arrivals, d.service) for d in replayed]
            self._replayed = {d.model.name for d in replayed}
            if spec.replay.coldstarts:
                self.loads = _cold_starts(spec.replay.coldstarts)
                self._load_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC01D]))
                kube.start_seconds_of = self._load_seconds
        for model, times, service in driven:
            self.servers[model.name] = DeploymentServer(model, spec.namespace, times, service)
            kube.add_deployment(served_deployment(model, spec.namespace) | {"spec": {
                **served_deployment(model, spec.namespace)["spec"], "replicas": 0}})
            if model.replicas:  # the first replicas load their model too
                kube.set_scale(spec.namespace, model.name, model.replicas)
            if model.owner == "hpa":
                kube.create_object("horizontalpodautoscalers", spec.namespace, hpa_for(model, spec.namespace))
            elif model.owner == "keda":
                kube.create_object("scaledobjects", spec.namespace, scaled_object_for(model, spec.namespace))

    def _load_seconds(self, pod: dict[str, Any]) -> float | None:
        """A replayed Deployment's new replica loads its model in a time drawn from the recorded loads."""
        md = pod.get("metadata") or {}
        if self.loads is None or md.get("namespace") != self.spec.namespace or \
                (md.get("labels") or {}).get("app") not in self._replayed:
            return None
        return float(self.loads[self._load_rng.integers(len(self.loads))])

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
