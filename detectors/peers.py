"""Peer comparison: a GPU against the other GPUs of the same job and of the same node.

GPUs of one distributed job run in lock step, so one GPU far less busy than its job's median is a
straggler, and a whole job gone idle while still holding its memory is hung. A GPU much hotter than
the other GPUs of its node points at cooling, not at the workload.

**Job grouping.** A GPU's job is `namespace/base`, where `base` is its pod name without the parts
Kubernetes and the training operators add per pod, removed in this order:
1. a Deployment's `-<replicaset hash>-<5 chars>` or a Job's `-<5 chars>` random suffix
   (`infer-7d9f8c6b5-x2k4z` -> `infer`, `prep-x2k4z` -> `prep`);
2. a trailing replica ordinal `-<digits>` (StatefulSets, indexed Jobs, PyTorchJob/MPIJob replicas);
3. a trailing replica role `-worker`, `-master`, `-launcher`, `-chief`, `-ps`, `-evaluator`.
So `train-0-worker-3` and `train-0-master-0` are both job `ml/train-0`. GPUs without a pod have no job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from detectors import metrics as m
from detectors.findings import Finding, FindingKind
from detectors.frame import FloatArray, GpuLabels
from detectors.stream import CycleView, IntArray, OnsetTracker, gpu_finding_fields, grow

_RANDOM_SUFFIX = re.compile(r"(-[0-9a-f]{8,10})?-[bcdfghjklmnpqrstvwxz2456789]{5}$")
_ORDINAL = re.compile(r"-\d+$")
_ROLE = re.compile(r"-(worker|master|launcher|chief|ps|evaluator)$")


def job_of(pod: str, namespace: str) -> str | None:
    """The job a pod belongs to (see the module docstring), or None for a GPU without a pod."""
    if not pod:
        return None
    base = _RANDOM_SUFFIX.sub("", pod)
    base = _ORDINAL.sub("", base)
    base = _ROLE.sub("", base) or pod
    return f"{namespace}/{base}"


def group_ids(keys: list[str | None]) -> tuple[IntArray, list[str]]:
    """Integer group id per row (-1 for none) and the group names."""
    names: dict[str, int] = {}
    ids = np.full(len(keys), -1, dtype=np.int64)
    for row, key in enumerate(keys):
        if key is not None:
            ids[row] = names.setdefault(key, len(names))
    return ids, list(names)


def group_median(values: FloatArray, groups: IntArray, n_groups: int) -> tuple[FloatArray, FloatArray]:
    """Per-group median of the finite values, and the count of finite values per group."""
    ok = np.isfinite(values) & (groups >= 0)
    g, v = groups[ok], values[ok]
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    counts = np.bincount(g, minlength=n_groups).astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    med = np.full(n_groups, np.nan)
    has = counts > 0
    c = counts[has].astype(np.int64)
    lo = starts[has] + (c - 1) // 2
    hi = starts[has] + c // 2
    med[has] = 0.5 * (v[lo] + v[hi])
    return med, counts


@dataclass
class _Groups:
    labels: GpuLabels
    job: IntArray
    job_names: list[str]
    node: IntArray
    node_names: list[str]


@dataclass
class PeerComparison:
    """Stragglers and hung jobs (against the job's GPUs) and hot GPUs (against the node's GPUs)."""

    min_peers: int = 3
    busy_level: float = 0.3
    straggler_gap: float = 0.25
    idle_level: float = 0.05
    held_memory_mib: float = 1024.0
    hot_gap_c: float = 10.0
    persist: int = 4
    name: str = "peers"
    _groups: _Groups | None = None
    _straggle_run: FloatArray = field(default_factory=lambda: np.zeros(0))
    _hung_run: FloatArray = field(default_factory=lambda: np.zeros(0))
    _hot_run: FloatArray = field(default_factory=lambda: np.zeros(0))
    _was_busy: FloatArray = field(default_factory=lambda: np.zeros(0))
    _straggler: OnsetTracker = field(default_factory=OnsetTracker)
    _hung: OnsetTracker = field(default_factory=OnsetTracker)
    _hot: OnsetTracker = field(default_factory=OnsetTracker)

    def _grouping(self, labels: GpuLabels) -> _Groups:
        if self._groups is None or self._groups.labels != labels:
            jobs = [job_of(p, ns) for p, ns in zip(labels.pod, labels.namespace, strict=True)]
            job, job_names = group_ids(jobs)
            node, node_names = group_ids(list(labels.hostname))
            self._groups = _Groups(labels, job, job_names, node, node_names)
        return self._groups

    def update(self, view: CycleView) -> list[Finding]:
        activity = self._activity(view)
        temp = view.metric(m.GPU_TEMP)
        fb = view.metric(m.FB_USED)
        if activity is None and temp is None:
            return []
        g = self._grouping(view.frame.gpus)
        n = view.n_slots
        for attr in ("_straggle_run", "_hung_run", "_hot_run", "_was_busy"):
            setattr(self, attr, grow(getattr(self, attr), n, 0.0))
        out: list[Finding] = []
        for j, ts in view.columns():
            if activity is not None:
                out += self._jobs(view, g, ts, activity[:, j], None if fb is None else fb[:, j])
            if temp is not None:
                out += self._node_heat(view, g, ts, temp[:, j], None if activity is None else activity[:, j])
        return out

    @staticmethod
    def _activity(view: CycleView) -> FloatArray | None:
        """Graphics-engine activity in [0, 1], from the profiling field or else GPU utilisation."""
        act = view.metric(m.GR_ENGINE_ACTIVE)
        util = view.metric(m.GPU_UTIL)
        if act is None:
            return None if util is None else util / 100.0
        if util is None:
            return act
        return np.where(np.isfinite(act), act, util / 100.0)

    def _jobs(self, view: CycleView, g: _Groups, ts: float, act: FloatArray,
              fb: FloatArray | None) -> list[Finding]:
        slots = view.slots
        med, count = group_median(act, g.job, len(g.job_names))
        in_job = g.job >= 0
        job_med = np.where(in_job, med[np.maximum(g.job, 0)], np.nan)
        peers = np.where(in_job, count[np.maximum(g.job, 0)], 0.0)
        enough = peers >= self.min_peers
        with np.errstate(invalid="ignore"):
            low = enough & (job_med >= self.busy_level) & (act < job_med - self.straggler_gap)
        run = np.where(low, self._straggle_run[slots] + 1, 0.0)
        self._straggle_run[slots] = run
        with np.errstate(invalid="ignore"):
            caught_up = ~enough | (act >= job_med - self.straggler_gap / 2)
        out = [self._finding(view, int(r), ts, "straggler", act, job_med, peers, g)
               for r in self._straggler.step(slots, run >= self.persist, caught_up)]

        held = np.ones_like(act, dtype=bool) if fb is None else np.nan_to_num(fb) >= self.held_memory_mib
        with np.errstate(invalid="ignore"):
            idle = enough & (job_med <= self.idle_level) & held & (self._was_busy[slots] > 0)
        hung_run = np.where(idle, self._hung_run[slots] + 1, 0.0)
        self._hung_run[slots] = hung_run
        out += [self._finding(view, int(r), ts, "hung_job", act, job_med, peers, g)
                for r in self._hung.step(slots, hung_run >= self.persist, ~idle)]
        with np.errstate(invalid="ignore"):
            busy_now = job_med >= self.busy_level
            idle_now = job_med <= self.idle_level
        released = idle_now & ~held  # idle with memory freed: finished, not hung
        self._was_busy[slots] = np.where(busy_now, 1.0, np.where(released, 0.0, self._was_busy[slots]))
        return out

    def _node_heat(self, view: CycleView, g: _Groups, ts: float, temp: FloatArray,
                   act: FloatArray | None) -> list[Finding]:
        """A GPU hotter than its node's others without working harder than they do (a busy GPU beside idle
        ones is warmer by its load, not by a fault)."""
        slots = view.slots
        med, count = group_median(temp, g.node, len(g.node_names))
        node_med = med[g.node]
        with np.errstate(invalid="ignore"):
            hot = (count[g.node] >= self.min_peers) & (temp - node_med >= self.hot_gap_c)
        if act is not None:
            act_med, _ = group_median(act, g.node, len(g.node_names))
            with np.errstate(invalid="ignore"):
                hot &= ~(act > act_med[g.node] + self.straggler_gap)
        run = np.where(hot, self._hot_run[slots] + 1, 0.0)
        self._hot_run[slots] = run
        out = []
        with np.errstate(invalid="ignore"):
            cooled = ~(temp - node_med >= self.hot_gap_c / 2)
        for r in self._hot.step(slots, run >= self.persist, cooled):
            out.append(Finding(
                ts=ts, kind="thermal", severity="warning",
                score=float(min(1.0, (temp[r] - node_med[r]) / 30)),
                detector=f"{self.name}.node_thermal",
                evidence={"metric": m.GPU_TEMP, "value": float(temp[r]), "node_median": float(node_med[r]),
                          "node_gpus": int(count[g.node[r]])},
                **gpu_finding_fields(view, int(r))))
        return out

    def _finding(self, view: CycleView, row: int, ts: float, kind: FindingKind, act: FloatArray,
                 job_med: FloatArray, peers: FloatArray, g: _Groups) -> Finding:
        gap = float(job_med[row] - act[row]) if np.isfinite(act[row]) else float(job_med[row])
        return Finding(
            ts=ts, kind=kind, severity="warning", score=float(min(1.0, max(gap, 0.0) + 0.5)),
            detector=f"{self.name}.{kind}",
            evidence={"job": g.job_names[g.job[row]],
                      "activity": float(act[row]) if np.isfinite(act[row]) else None,
                      "job_median_activity": float(job_med[row]), "job_gpus": int(peers[row]),
                      "samples": self.persist},
            **gpu_finding_fields(view, row))
