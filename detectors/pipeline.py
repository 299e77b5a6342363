"""One detection cycle over the fleet: the rules, the streaming anomaly models and the forecasts, run on
the samples a cycle has not seen yet, with the state they keep between cycles."""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from detectors.corroboration import Corroboration
from detectors.findings import Finding
from detectors.frame import FleetFrame, GpuLabels
from detectors.rules import Stage, default_rules
from detectors.settling import LoadSettling
from detectors.stream import CycleView, ScrapeInterval, SlotIndex

_STATE_MAGIC = b"gpuops-detection-cycle-v1\n"


class InvalidFrameError(ValueError):
    """A frame the cycle refuses (nothing of it is consumed, so a corrected frame can be sent again)."""


def default_stages() -> list[Stage]:
    """Every stage of a normal cycle, rules first."""
    from detectors.anomaly import default_anomaly_stages
    from detectors.fabric import FabricStage
    from detectors.forecast import default_forecast_stages

    return [*default_rules(), FabricStage(), *default_anomaly_stages(), *default_forecast_stages()]


class DetectionCycle:
    """Streaming detection: `update(frame)` reads only samples newer than the last cycle's.

    Frames may overlap the previous one; samples at or before the last seen timestamp are skipped.
    Findings come out in time order and each uses no data after its own `ts`.
    """

    def __init__(self, stages: Sequence[Stage] | None = None) -> None:
        self.stages: list[Stage] = list(stages) if stages is not None else default_stages()
        self.index = SlotIndex()
        self.last_ts = -math.inf
        self.settling = LoadSettling()
        self.jobs = JobMemory()
        self.corroboration = Corroboration()
        self.interval = ScrapeInterval()

    def update(self, frame: FleetFrame) -> list[Finding]:
        _validate(frame)
        start = int(np.searchsorted(frame.timestamps, self.last_ts, side="right"))
        if start >= frame.n_steps:
            return []
        interval = getattr(self, "interval", None)  # states saved before durations were data time lack it
        self.interval = interval if interval is not None else ScrapeInterval()
        step_s = self.interval.follow(frame.timestamps[start:], self.last_ts)
        view = CycleView(frame=frame, slots=self.index.slots_of(frame.gpus), index=self.index, start=start,
                         step_s=step_s)
        findings: list[Finding] = []
        for stage in self.stages:
            findings.extend(stage.update(view))
        self.last_ts = float(frame.timestamps[-1])
        settling = getattr(self, "settling", None) or LoadSettling()  # states saved before the guard lack it
        self.settling = settling
        jobs = getattr(self, "jobs", None)  # likewise for the jobs' memory
        self.jobs = jobs if jobs is not None else JobMemory()
        corroboration = getattr(self, "corroboration", None)  # likewise for the corroboration's signals
        self.corroboration = corroboration if corroboration is not None else Corroboration()
        findings = self.corroboration.annotate(view, settling.filter(view, findings))
        findings = with_jobs(findings, frame.gpus, self.jobs, self.last_ts)
        findings.sort(key=lambda f: (f.ts, f.hostname, -1 if f.gpu is None else f.gpu, f.detector, f.kind))
        return findings

    def state_bytes(self) -> bytes:
        """The whole streaming state, for a worker to hand to the next one. Restore with `from_state`."""
        return _STATE_MAGIC + pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_state(cls, data: bytes) -> DetectionCycle:
        """A cycle restored from `state_bytes` (our own store's bytes only: this unpickles)."""
        if not data.startswith(_STATE_MAGIC):
            raise ValueError("not a detection-cycle state (wrong header); was it written by state_bytes()?")
        cycle = pickle.loads(data[len(_STATE_MAGIC):])
        if not isinstance(cycle, cls):
            raise ValueError(f"detection-cycle state holds a {type(cycle).__name__}, not a DetectionCycle")
        # A state saved before a stage existed (a rule, a detector added since) gets it, fresh, where the default
        # order puts it: right after the last earlier default stage the state holds (so before any stage of its
        # own, such as a learned risk model).
        names = [getattr(stage, "name", "") for stage in cycle.stages]
        defaults = default_stages()
        for k, stage in enumerate(defaults):
            if stage.name in names:
                continue
            at = max((names.index(d.name) + 1 for d in defaults[:k] if d.name in names), default=0)
            cycle.stages.insert(at, stage)
            names.insert(at, stage.name)
        return cycle


JOB_MEMORY_S = 900.0


@dataclass
class JobMemory:
    """Each GPU's job (namespace/workload, from its pod label), worked out again only when the labels change,
    and for a GPU whose pod went away, the job it had and when it lost it. A fault that kills the pod (an
    XID 48, a GPU off the bus) is reported when the GPU's pod label is already gone; its job is the one it
    had, for `JOB_MEMORY_S`."""

    labels: GpuLabels | None = None
    current: dict[tuple[str, int], str] = field(default_factory=dict)
    lost: dict[tuple[str, int], tuple[str, float]] = field(default_factory=dict)
    pods: dict[tuple[str, int], str] = field(default_factory=dict)  # the pod each GPU holds now (namespace/name)

    def __setstate__(self, state: dict[str, object]) -> None:
        """A memory pickled before `pods` existed works it out again from the labels at the next `observe`."""
        self.__dict__.update(state)
        if "pods" not in state:
            self.pods, self.labels = {}, None

    def observe(self, labels: GpuLabels, now: float) -> None:
        if self.labels is not None and (labels is self.labels or labels == self.labels):
            return
        from domain.jobs import job_of

        current, pods = {}, {}
        for host, gpu, pod, ns in zip(labels.hostname, labels.gpu, labels.pod, labels.namespace, strict=True):
            if pod:
                pods[(host, gpu)] = f"{ns}/{pod}" if ns else pod
            if job := job_of(pod, ns):
                current[(host, gpu)] = job
        self.pods = pods
        for key, job in self.current.items():
            if key not in current:
                self.lost[key] = (job, now)
        for key in current:
            self.lost.pop(key, None)
        self.labels, self.current = labels, current

    def job(self, key: tuple[str, int], now: float) -> str | None:
        if (job := self.current.get(key)) is not None:
            return job
        lost = self.lost.get(key)
        return lost[0] if lost is not None and lost[1] >= now - JOB_MEMORY_S else None


def with_jobs(findings: list[Finding], labels: GpuLabels, jobs: JobMemory | None = None,
              now: float = 0.0) -> list[Finding]:
    """Add the GPU's job to each GPU finding's evidence, so that the incident service can tell one job's
    troubles on many nodes from many independent ones, and `pod_now`, the pod that holds the GPU as the finding
    is made (a GPU the device plugin withholds holds none). `jobs` carries what was known across cycles (see
    `JobMemory`) and is updated here."""
    jobs = JobMemory() if jobs is None else jobs
    jobs.observe(labels, now)
    out = []
    for f in findings:
        if f.gpu is None:
            out.append(f)
            continue
        extra: dict[str, str] = {}
        if "job" not in f.evidence and (job := jobs.job((f.hostname, f.gpu), now)) is not None:
            extra["job"] = job
        if "pod_now" not in f.evidence and (pod := jobs.pods.get((f.hostname, f.gpu))) is not None:
            extra["pod_now"] = pod
        out.append(replace(f, evidence={**f.evidence, **extra}) if extra else f)
    return out


def _validate(frame: FleetFrame) -> None:
    keys = set(zip(frame.gpus.hostname, frame.gpus.gpu, strict=True))
    if len(keys) != frame.n_gpus:
        raise InvalidFrameError("frame has duplicate (hostname, gpu) rows; the connector must merge them")
    if not np.all(np.isfinite(frame.timestamps)):
        raise InvalidFrameError("frame timestamps must be finite unix seconds")
    for name, arr in [*frame.metrics.items(), *frame.node_metrics.items()]:
        if arr.dtype.kind != "f":
            raise InvalidFrameError(
                f"metric {name} has dtype {arr.dtype}; expected float64 with NaN for gaps")
        if np.isinf(arr).any():
            rows = np.unique(np.nonzero(np.isinf(arr))[0])[:5].tolist()
            raise InvalidFrameError(
                f"metric {name} has infinite values (rows {rows}); send NaN for no sample")
