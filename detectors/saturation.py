"""Job saturation: a service whose load surges far above its usual level, or pins it at the ceiling, for
longer than serving traffic bursts, is overloaded.

An inference Deployment's replicas follow their request curve, which moves over hours. When requests jump (a
launch, a retry storm, a client gone wild), every replica's utilisation jumps with them, and at the ceiling
requests queue. dcgm-exporter cannot see the queue, but it sees the symptom: the job's median utilisation
high and a multiple of its own usual level (a moving average with a half-life of an hour of data time, frozen
during an episode so that a long overload does not become the norm), or at the ceiling while its usual level
is well below. A training job is not a Deployment and never counts. Reported when an episode has lasted
`persist_s` and every `repeat_s` while it lasts, on the deployment's busiest GPU, naming the deployment the
agent may scale; uncorroborated until it has lasted `sustain_s`: serving traffic bursts for minutes every day,
and a burst the replicas absorb, or an autoscaler answers, is no overload.

Every duration is data time, not a count of samples: at a 60 s scrape a count of samples would stretch the
usual level's memory fourfold, and a service's ordinary daily rise would read as a surge.
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
    """A job's level; every field after `usual` has a default, so a level pickled before they existed still
    loads (it learns its data time again)."""

    usual: float
    last_ts: float = math.nan
    learnt_s: float = 0.0                 # data time its usual level has been learnt over
    run_since: float = math.nan           # when the current saturated run began (NaN: not saturated)
    quiet_since: float = math.nan         # when the job last stopped being saturated
    samples: int = 0                      # samples in the current run
    reported_at: float = -math.inf
    active: bool = False


@dataclass
class JobSaturation:
    high_util: float = 70.0        # job median GPU utilisation (%) of a surge …
    surge_ratio: float = 1.6       # … at least this multiple of its usual level,
    saturated_util: float = 97.0   # or at the ceiling …
    usual_below: float = 85.0      # … while its usual level is at most this
    persist_s: float = 300.0       # a saturated run this long is reported (uncorroborated)
    sustain_s: float = 1200.0      # … and this long, it stands on its own: longer than the bursts of a day
    warmup_s: float = 600.0        # data time of a job before its usual level means anything
    repeat_s: float = 60.0         # an episode still going on is reported again this often
    half_life_s: float = 3600.0    # the usual level's moving average
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
        out: list[Finding] = []
        for j, ts in view.columns():
            column = util[:, j]
            med, count = group_median(column, groups, len(names))
            for k, name in enumerate(names):
                level = float(med[k])
                if not math.isfinite(level):
                    continue
                job = self._jobs.setdefault(name, _JobLevel(usual=level, last_ts=ts))
                if self._step(job, level, ts):
                    rows = np.flatnonzero(groups == k)
                    row = int(rows[np.nanargmax(column[rows])])
                    run_s = ts - job.run_since
                    out.append(Finding(
                        ts=ts, kind=FindingKind.OVERLOAD, severity=Severity.WARNING,
                        score=float(min(1.0, 0.5 + (level - job.usual) / 100)),
                        detector=f"{self.name}.overload",
                        evidence={"job": name, "deployment": name, "job_median_util": level,
                                  "usual_util": round(job.usual, 1), "job_gpus": int(count[k]),
                                  "samples": job.samples, "saturated_s": run_s,
                                  **self._corroboration(level, run_s)},
                        **gpu_finding_fields(view, row)))
        return out

    def _step(self, job: _JobLevel, level: float, ts: float) -> bool:
        """Follow one sample of a job; True when it is to be reported (an episode starting, or going on and
        due again). A gap in the data longer than `persist_s` breaks a run: it cannot show persistence."""
        dt = max(0.0, ts - job.last_ts) if math.isfinite(job.last_ts) else 0.0
        job.last_ts = ts
        if dt > self.persist_s:
            job.run_since = math.nan
        saturated = job.learnt_s >= self.warmup_s and (
            (level >= self.high_util and level >= self.surge_ratio * job.usual)
            or (level >= self.saturated_util and job.usual <= self.usual_below))
        if saturated:
            if math.isnan(job.run_since):
                job.run_since, job.samples = ts, 0
            job.samples += 1
            job.quiet_since = math.nan
        else:  # frozen while saturated, so a long overload does not become the norm
            job.run_since, job.samples = math.nan, 0
            if math.isnan(job.quiet_since):
                job.quiet_since = ts
            job.usual += (1.0 - 0.5 ** (min(dt, self.half_life_s) / self.half_life_s)) * (level - job.usual)
            job.learnt_s += dt
            if job.active and ts - job.quiet_since >= self.persist_s:  # over, not a momentary dip
                job.active = False
            return False
        if ts - job.run_since < self.persist_s - 1e-6:
            return False
        if job.active and ts - job.reported_at < self.repeat_s - 1e-6:
            return False
        job.active, job.reported_at = True, ts
        return True

    def _corroboration(self, level: float, run_s: float) -> dict[str, object]:
        """A surge is a suspicion until it outlasts the bursts serving traffic shows every day (minutes): only
        then is it an overload. Sitting at the ceiling is named, but it is the same utilisation series, not a
        second signal: an engine that batches keeps its GPU busy near 100 % while it keeps up, and a burst pins
        it there for minutes."""
        sustained = run_s >= self.sustain_s - 1e-6
        signals = [name for name, agrees in (("sustained", sustained),
                                             ("at_ceiling", level >= self.saturated_util)) if agrees]
        return {"corroborated": sustained, "signals": signals}
