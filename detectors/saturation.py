"""Job saturation: a service whose load surges far above its usual level, or pins it at the ceiling, is
overloaded.

An inference Deployment's replicas follow their request curve, which moves over hours. When requests jump (a
launch, a retry storm, a client gone wild), every replica's utilisation jumps with them, and at the ceiling
requests queue. dcgm-exporter cannot see the queue, but it sees the symptom: the job's median utilisation
high and a multiple of its own usual level (a slow moving average, frozen during an episode so that a long
overload does not become the norm), or at the ceiling while its usual level is well below. A training job
is not a Deployment and never counts. Reported when an episode starts and every `repeat_every` samples while
it lasts, on the deployment's busiest GPU, naming the deployment the agent may scale. A surge below the
ceiling is reported uncorroborated until it has lasted `sustain` samples: serving traffic bursts for minutes
every day, and a burst the replicas absorb is no overload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import GpuLabels
from detectors.peers import group_ids, group_median
from detectors.stream import CycleView, IntArray, gpu_finding_fields
from domain.jobs import DEPLOYMENT_SUFFIX


def deployment_of(pod: str, namespace: str) -> str | None:
    """`namespace/deployment` of a Deployment's replica pod (`<deployment>-<pod-template hash>-<5 chars>`), or
    None for any other pod: only replicas can be overloaded and scaled; a training job's pods never match."""
    deployment = DEPLOYMENT_SUFFIX.sub("", pod or "")
    return f"{namespace}/{deployment}" if deployment and deployment != pod else None


@dataclass
class _JobLevel:
    usual: float
    seen: int = 0
    run: int = 0
    quiet: int = 0
    active: bool = False


@dataclass
class JobSaturation:
    high_util: float = 70.0        # job median GPU utilisation (%) of a surge …
    surge_ratio: float = 1.6       # … at least this multiple of its usual level,
    saturated_util: float = 97.0   # or at the ceiling …
    usual_below: float = 85.0      # … while its usual level is at most this
    persist: int = 20              # samples at the ceiling before it counts (5 min at 15 s)
    sustain: int = 80              # samples a surge below the ceiling lasts before it stands on its own (20 min)
    warmup: int = 40               # samples of a job before its usual level means anything
    repeat_every: int = 4          # an episode still going on is reported again every this many samples
    half_life: float = 240.0       # samples; the usual level's moving average (about an hour at 15 s)
    name: str = "saturation"
    _jobs: dict[str, _JobLevel] = field(default_factory=dict)
    _groups: tuple[GpuLabels, IntArray, list[str]] | None = None

    def _grouping(self, labels: GpuLabels) -> tuple[IntArray, list[str]]:
        """Each row's deployment (group id, -1 for none), worked out again only when the labels change."""
        if self._groups is None or self._groups[0] != labels:
            ids, names = group_ids([deployment_of(p, ns) for p, ns in zip(labels.pod, labels.namespace, strict=True)])
            self._groups = (labels, ids, names)
        return self._groups[1], self._groups[2]

    def update(self, view: CycleView) -> list[Finding]:
        util = view.metric(m.GPU_UTIL)
        if util is None:
            return []
        groups, names = self._grouping(view.frame.gpus)
        if not names:
            return []
        alpha = 1.0 - 0.5 ** (1.0 / self.half_life)
        out: list[Finding] = []
        for j, ts in view.columns():
            column = util[:, j]
            med, count = group_median(column, groups, len(names))
            for k, name in enumerate(names):
                level = float(med[k])
                if not math.isfinite(level):
                    continue
                job = self._jobs.setdefault(name, _JobLevel(usual=level))
                saturated = job.seen >= self.warmup and (
                    (level >= self.high_util and level >= self.surge_ratio * job.usual)
                    or (level >= self.saturated_util and job.usual <= self.usual_below))
                job.run = job.run + 1 if saturated else 0
                job.quiet = 0 if saturated else job.quiet + 1
                if not saturated:  # frozen while saturated, so a long overload does not become the norm
                    job.usual += alpha * (level - job.usual)
                    job.seen += 1
                again = job.active and job.run > self.persist and (job.run - self.persist) % self.repeat_every == 0
                if (job.run >= self.persist and not job.active) or again:
                    job.active = True
                    rows = np.flatnonzero(groups == k)
                    row = int(rows[np.nanargmax(column[rows])])
                    out.append(Finding(
                        ts=ts, kind=FindingKind.OVERLOAD, severity=Severity.WARNING,
                        score=float(min(1.0, 0.5 + (level - job.usual) / 100)),
                        detector=f"{self.name}.overload",
                        evidence={"job": name, "deployment": name, "job_median_util": level,
                                  "usual_util": round(job.usual, 1), "job_gpus": int(count[k]),
                                  "samples": job.run, **self._corroboration(level, job.run)},
                        **gpu_finding_fields(view, row)))
                elif job.active and job.quiet >= self.persist:  # over, not a momentary dip
                    job.active = False
        return out

    def _corroboration(self, level: float, run: int) -> dict[str, object]:
        """A surge is a suspicion until the replicas sit at the ceiling (demand beyond capacity: requests queue)
        or it outlasts the bursts serving traffic shows every day (minutes): only then is it an overload."""
        signals = [name for name, agrees in (("at_ceiling", level >= self.saturated_util),
                                             ("sustained", run >= self.sustain)) if agrees]
        return {"corroborated": bool(signals), "signals": signals}
