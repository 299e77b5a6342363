"""The replica simulator: one replica is one GPU holding one base model and serving one request at a time;
requests of a model wait FIFO for its replicas; a started replica is ready after a cold start drawn (seeded)
from the observed distribution; GPU time counts from a replica's start to its stop.

A scaling policy is asked every `period` seconds for each model's desired replica count, with a
`CycleObservation` of that instant. Scaling up starts replicas at once; scaling down stops replicas still
loading (latest first), then idle ones; a busy replica is never stopped. Each model's k-th replica start draws
the same cold start under every policy (common random numbers), so policies differ by their decisions only.
The event loop advances only the models with an event due, so quiet models cost nothing between cycles.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gpuops.autoscale.observation import CycleObservation
from simulator.request_trace import FloatArray, IntArray, RequestTrace

INF = math.inf
STALL_S = 86400.0


class ScalingPolicy(Protocol):
    name: str

    def decide(self, observation: CycleObservation) -> IntArray:
        """Desired replicas per model."""
        ...


@dataclass(frozen=True)
class ReplayResult:
    """What a policy cost and what users waited: `wait` per request (trace order), GPU seconds in all."""

    policy: str
    wait: FloatArray
    gpu_seconds: float
    replica_starts: int
    decisions: IntArray | None = None
    gpu_seconds_by_model: FloatArray | None = None

    def summary(self, threshold_s: float = 5.0) -> dict[str, float | int | str]:
        wait = self.wait
        return {
            "policy": self.policy,
            "gpu_hours": round(self.gpu_seconds / 3600.0, 2),
            "wait_p50_s": round(float(np.percentile(wait, 50)), 2),
            "wait_p95_s": round(float(np.percentile(wait, 95)), 2),
            "wait_p99_s": round(float(np.percentile(wait, 99)), 2),
            "share_wait_over_5s": round(float(np.mean(wait > threshold_s)), 4),
            "replica_starts": self.replica_starts,
        }


class ColdStarts:
    """Each model's own seeded stream of cold starts, resampled from the observed ones."""

    def __init__(self, observed: FloatArray, n_models: int, seed: int, chunk: int = 256) -> None:
        self._observed = observed
        self._rngs = [np.random.default_rng([seed, m]) for m in range(n_models)]
        self._drawn: list[list[float]] = [[] for _ in range(n_models)]
        self._chunk = chunk

    def draw(self, model: int, k: int) -> float:
        """The model's k-th cold start (0-based)."""
        drawn = self._drawn[model]
        while len(drawn) <= k:
            picks = self._rngs[model].integers(0, self._observed.shape[0], self._chunk)
            drawn.extend(float(x) for x in self._observed[picks])
        return drawn[k]


class _Replica:
    __slots__ = ("busy_until", "ready", "reported", "started")

    def __init__(self, started: float, ready: float) -> None:
        self.started = started
        self.ready = ready
        self.busy_until = -INF
        self.reported = False


class _Model:
    """One model's replicas, queue and pending arrivals."""

    def __init__(self, requests: IntArray) -> None:
        self.requests = requests
        self.next = 0
        self.queue: deque[int] = deque()
        self.replicas: list[_Replica] = []
        self.starts = 0


class ReplicaSimulator:
    """Replays `trace` under one policy; `run` returns the waits and the GPU time."""

    def __init__(self, trace: RequestTrace, cold_starts: ColdStarts, period: float = 15.0) -> None:
        self.trace = trace
        self.cold = cold_starts
        self.period = period
        self.n = len(trace.models)
        order = np.argsort(trace.model, kind="stable")
        bounds = np.searchsorted(trace.model[order], np.arange(self.n + 1))
        self._per_model = [order[bounds[m]:bounds[m + 1]] for m in range(self.n)]

    def run(self, policy: ScalingPolicy, *, record: bool = False) -> ReplayResult:
        trace, n, period = self.trace, self.n, self.period
        arrival, service = trace.arrival, trace.service
        models = [_Model(r) for r in self._per_model]
        wait = np.full(len(trace), np.nan)
        due = np.array([arrival[r[0]] if r.size else INF for r in self._per_model])
        in_flight = np.zeros(n, dtype=np.int64)
        replicas = np.zeros(n, dtype=np.int64)
        gpu_seconds = np.zeros(n)
        t = math.floor(arrival[0] / period) * period
        end = float(np.max(arrival + service))
        previous = 0
        recorded: list[IntArray] = []
        while True:
            cold: list[tuple[int, float]] = []
            for m in np.flatnonzero(due <= t):
                mm = int(m)
                due[mm], in_flight[mm] = self._advance(models[mm], t, wait, cold, mm)
            hi = int(np.searchsorted(arrival, t, side="right"))
            arrivals = np.bincount(trace.model[previous:hi], minlength=n).astype(np.int64)
            previous = hi
            drained = hi == len(trace) and not in_flight.any()
            if drained and t >= end:
                break
            if t > end + STALL_S:
                raise RuntimeError(f"{getattr(policy, 'name', policy)} left {int(in_flight.sum())} request(s) "
                                   f"unserved {STALL_S:.0f} s after the trace's end")
            desired = policy.decide(CycleObservation(t, arrivals, in_flight.copy(), replicas.copy(), tuple(cold)))
            if record:
                recorded.append(desired.copy())
            for m in np.flatnonzero(desired != replicas):
                mm = int(m)
                gpu_seconds[mm] += self._scale(models[mm], mm, int(desired[mm]), t)
                replicas[mm] = len(models[mm].replicas)
                due[mm] = min(due[mm], self._next_event(models[mm], t))
            t += period
        for index, model in enumerate(models):
            for r in model.replicas:
                gpu_seconds[index] += max(end, r.busy_until, r.started) - r.started
        return ReplayResult(getattr(policy, "name", type(policy).__name__), wait, float(gpu_seconds.sum()),
                            sum(m.starts for m in models),
                            np.asarray(recorded, dtype=np.int64) if record else None, gpu_seconds)

    def _advance(self, model: _Model, t: float, wait: FloatArray, cold: list[tuple[int, float]],
                 index: int) -> tuple[float, int]:
        """Serve `model` FIFO up to `t`; return its next event time and its requests in flight at `t`."""
        arrival, service = self.trace.arrival, self.trace.service
        requests = model.requests
        while model.next < requests.size and arrival[requests[model.next]] <= t:
            model.queue.append(int(requests[model.next]))
            model.next += 1
        for r in model.replicas:
            if not r.reported and r.ready <= t:
                r.reported = True
                cold.append((index, r.ready - r.started))
        queue, reps = model.queue, model.replicas
        while queue and reps:
            best = min(reps, key=lambda r: max(r.ready, r.busy_until))
            free = max(best.ready, best.busy_until)
            if free > t:
                break
            i = queue.popleft()
            start = max(free, arrival[i])
            wait[i] = start - arrival[i]
            best.busy_until = start + service[i]
        busy = sum(1 for r in reps if r.busy_until > t)
        return self._next_event(model, t), len(queue) + busy

    def _next_event(self, model: _Model, t: float) -> float:
        nxt = float(self.trace.arrival[model.requests[model.next]]) if model.next < model.requests.size else INF
        for r in model.replicas:
            if r.busy_until > t:
                nxt = min(nxt, r.busy_until)
            if r.ready > t:
                nxt = min(nxt, r.ready)
        return nxt

    def _scale(self, model: _Model, index: int, desired: int, t: float) -> float:
        """Start or stop replicas towards `desired`; return the GPU seconds of those stopped."""
        reps = model.replicas
        while len(reps) < desired:
            reps.append(_Replica(t, t + self.cold.draw(index, model.starts)))
            model.starts += 1
        if len(reps) <= desired:
            return 0.0
        loading = sorted((r for r in reps if r.ready > t), key=lambda r: -r.ready)
        idle = [r for r in reps if r.ready <= t and r.busy_until <= t]
        stopped = (loading + idle)[:len(reps) - desired]
        for r in stopped:
            reps.remove(r)
        return sum(t - r.started for r in stopped)


def oracle(trace: RequestTrace, cold_starts: ColdStarts) -> ReplayResult:
    """The lower bound: nobody waits, and a replica starts exactly one cold start before it is needed. Each
    request goes to the replica that fell idle most recently; a replica stays up across an idle gap only when
    the gap is shorter than the cold start a restart would cost."""
    gpu_seconds = 0.0
    starts = 0
    for m in range(len(trace.models)):
        requests = np.flatnonzero(trace.model == m)
        free: list[float] = []  # idle replicas' free times, ascending
        busy: list[float] = []
        k = 0
        for i in requests:
            a, s = float(trace.arrival[i]), float(trace.service[i])
            busy.sort()
            while busy and busy[0] <= a:
                free.append(busy.pop(0))
            free.sort()
            c = cold_starts.draw(m, k)
            if free:
                gap = a - free.pop()
                if gap <= c:
                    gpu_seconds += gap + s
                else:
                    gpu_seconds += c + s
                    k += 1
                    starts += 1
            else:
                gpu_seconds += c + s
                k += 1
                starts += 1
            busy.append(a + s)
    return ReplayResult("oracle", np.zeros(len(trace)), gpu_seconds, starts)
