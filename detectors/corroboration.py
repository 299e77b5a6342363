"""Corroboration: does an independent second signal agree with a soft finding?

A soft finding (a baseline, the multivariate model, a thermal or memory forecast, a straggler, a GPU hotter
than its node) rests on one series' statistics. The incident service opens an incident from one only when it
persists and something independent agrees, so each soft finding carries `evidence["corroborated"]` and
`evidence["signals"]`: the names of the independent signals that agree at the finding's time. Hard findings
(XIDs, ECC, remapped rows, limits, lost GPUs, counter storms and the forecasts of error counters, overloads:
each decided on its own decisive signals) carry nothing and count as corroborated; hung jobs name the
independent signals they were decided on. An uncorroborated soft finding is never
`critical`.

Signals, each only where its series is exported (absent series: the signal never agrees):
- `thermal_violation`: `DCGM_FI_DEV_THERMAL_VIOLATION` rose within `violation_window_s` (the GPU throttled
  for heat); `power_violation` likewise for `DCGM_FI_DEV_POWER_VIOLATION`;
- `temp_above_node_peers_at_equal_power`: `hot_gap_c` hotter than its node's median GPU while drawing no
  more than `power_gap` above their median power, for `persist_s`, a minute (same inlet air, same load);
- `sm_clock_below_job_at_equal_load` / `power_below_job_at_equal_load` (training and batch jobs only: a
  Deployment's replicas serve different requests, so equal utilisation is not equal work among them): at
  least as busy as its job's median GPU (utilisation, else engine activity, within `load_gap`) but clocked
  `clock_gap` or drawing `power_gap` below the job's median (of a job of two GPUs, the other GPU: two have no
  median), for `persist_s`, a minute (at equal work a GPU's power scatters by a few percent; a GPU held slow
  draws visibly less while its peers wait for it).
A finding's own basis is never its corroboration (a node-thermal finding is not corroborated by being hotter
than its node; a straggler found by its clock not by its clock). A straggler whose power-violation counter is
rising is held at its own power limit: slower than peers with a higher limit is an operator's power cap at
work, so it is reported uncorroborated with `explained_by: power_limit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FloatArray, GpuLabels
from detectors.peers import PeerComparison, group_ids, group_median, job_reference
from detectors.saturation import deployment_of
from detectors.stream import BoolArray, CycleView, IntArray, finding_rows, grow, rate_per_sample
from domain.jobs import job_of

SOFT_DETECTORS = ("baseline.", "multivariate.", "forecast.", "peers.straggler", "peers.node_thermal")
SOFT_FORECAST_KINDS = frozenset({FindingKind.THERMAL, FindingKind.MEMORY_LEAK})

THERMAL_VIOLATION = "thermal_violation"
POWER_VIOLATION = "power_violation"
HOT_AT_EQUAL_POWER = "temp_above_node_peers_at_equal_power"
CLOCK_BELOW_JOB = "sm_clock_below_job_at_equal_load"
POWER_BELOW_JOB = "power_below_job_at_equal_load"
POWER_BELOW_OWN = "power_below_own_at_equal_load"

# Which independent signals can agree with a finding of each kind.
CANDIDATES: dict[FindingKind, tuple[str, ...]] = {
    FindingKind.THERMAL: (THERMAL_VIOLATION, HOT_AT_EQUAL_POWER),
    FindingKind.STRAGGLER: (CLOCK_BELOW_JOB, POWER_BELOW_JOB, THERMAL_VIOLATION),
    FindingKind.POWER: (THERMAL_VIOLATION, CLOCK_BELOW_JOB),
    FindingKind.ANOMALY: (THERMAL_VIOLATION, HOT_AT_EQUAL_POWER, CLOCK_BELOW_JOB, POWER_BELOW_JOB),
}


def is_soft(finding: Finding) -> bool:
    if not finding.detector.startswith(SOFT_DETECTORS):
        return False
    return not finding.detector.startswith("forecast.") or finding.kind in SOFT_FORECAST_KINDS


def own_basis(finding: Finding) -> set[str]:
    """The signals a finding was made from, which cannot corroborate it."""
    if finding.detector.startswith("peers.node_thermal"):
        return {HOT_AT_EQUAL_POWER}
    if finding.kind == FindingKind.STRAGGLER and "sm_clock_mhz" in finding.evidence:
        return {CLOCK_BELOW_JOB}
    metric = finding.evidence.get("metric")
    if metric == m.SM_CLOCK:
        return {CLOCK_BELOW_JOB}
    if metric == m.POWER_USAGE:
        return {POWER_BELOW_JOB}
    return set()


@dataclass
class Corroboration:
    """Follows the signals sample by sample and annotates a cycle's soft findings (module docstring)."""

    violation_window_s: float = 300.0
    hot_gap_c: float = 5.0
    load_gap: float = 0.1
    clock_gap: float = 0.075
    power_gap: float = 0.1
    persist_s: float = 60.0
    min_peers: int = 3
    own_min_load: float = 0.1
    own_min_s: float = 600.0
    own_half_life_s: float = 3600.0
    _own: FloatArray = field(default_factory=lambda: np.zeros((0, 5)))
    _own_pod: list[str | None] = field(default_factory=list)
    _own_labels: GpuLabels | None = None
    _last: dict[str, FloatArray] = field(default_factory=dict)
    _rose_at: dict[str, FloatArray] = field(default_factory=dict)
    _runs: dict[str, FloatArray] = field(default_factory=dict)
    _groups: tuple[GpuLabels, IntArray, int, IntArray, int] | None = None

    def __setstate__(self, state: dict[str, object]) -> None:
        """A state pickled by an older version lacks the newer fields: they start from their defaults."""
        self.__dict__.update(Corroboration().__dict__)
        self.__dict__.update(state)

    def annotate(self, view: CycleView, findings: list[Finding]) -> list[Finding]:
        """Follow the cycle's new samples; return the findings with their corroboration added."""
        signals_at: dict[float, dict[str, BoolArray]] = {}
        for j, ts in view.columns():
            signals_at[ts] = self._signals(view, j, ts)
        if not findings:
            return findings
        out = []
        for f, row in zip(findings, finding_rows(view.frame.gpus, findings), strict=True):
            signals = signals_at.get(f.ts)
            if not is_soft(f) or row is None or signals is None:
                out.append(f)
                continue
            if f.kind == FindingKind.STRAGGLER and f.evidence.get("replica"):
                out.append(self._replica(f, signals, row))
                continue
            agree = [name for name in CANDIDATES.get(f.kind, ())
                     if name not in own_basis(f) and name in signals and bool(signals[name][row])]
            if f.kind == FindingKind.STRAGGLER and POWER_VIOLATION in signals and bool(signals[POWER_VIOLATION][row]):
                # held at its own power limit: slower than peers with a higher limit is the configuration
                # working, not a fault (operators cap power on purpose); its low clock and power are the cap's
                capped = corroborate(f, [])
                out.append(replace(capped, evidence={**capped.evidence, "explained_by": "power_limit"}))
                continue
            out.append(corroborate(f, agree))
        return out

    @staticmethod
    def _replica(f: Finding, signals: dict[str, BoolArray], row: int) -> Finding:
        """A replica held slow against its Deployment's working replicas: a power or thermal limit explains a low
        clock (an operator's cap, the heat the thermal detectors own), else the GPU drawing less than it did
        itself at this utilisation agrees (its clock held lower costs it power; another replica's load is no
        measure of its own)."""
        for name, why in ((POWER_VIOLATION, "power_limit"), (THERMAL_VIOLATION, "thermal_limit")):
            if name in signals and bool(signals[name][row]):
                explained = corroborate(f, [])
                return replace(explained, evidence={**explained.evidence, "explained_by": why})
        return corroborate(f, [POWER_BELOW_OWN] if POWER_BELOW_OWN in signals and bool(signals[POWER_BELOW_OWN][row])
                           else [])

    def _signals(self, view: CycleView, j: int, ts: float) -> dict[str, BoolArray]:
        slots = view.slots
        out: dict[str, BoolArray] = {}
        for name, metric in ((THERMAL_VIOLATION, m.THERMAL_VIOLATION), (POWER_VIOLATION, m.POWER_VIOLATION)):
            if (arr := view.metric(metric)) is not None:
                out[name] = self._counter_rose(name, slots, ts, arr[:, j], view.n_slots)
        temp, power = _column(view, m.GPU_TEMP, j), _column(view, m.POWER_USAGE, j)
        _, job, n_jobs, node, n_nodes = self._grouping(view.frame.gpus)
        if temp is not None and power is not None and n_nodes:
            node_temp, count = group_median(temp, node, n_nodes)
            node_power, _ = group_median(power, node, n_nodes)
            with np.errstate(invalid="ignore"):
                hot = ((count[node] >= self.min_peers) & (temp - node_temp[node] >= self.hot_gap_c)
                       & (power <= node_power[node] * (1 + self.power_gap)))
            out[HOT_AT_EQUAL_POWER] = self._held(HOT_AT_EQUAL_POWER, view, hot)
        util = _column(view, m.GPU_UTIL, j)
        activity = PeerComparison._activity(view)
        load = util / 100.0 if util is not None else None if activity is None else activity[:, j]
        if load is not None and power is not None:
            out[POWER_BELOW_OWN] = self._held(POWER_BELOW_OWN, view, self._below_own(view, load, power))
        if load is not None and n_jobs:
            with np.errstate(invalid="ignore"):
                equal_load = load >= job_reference(load, job, n_jobs, self.min_peers) - self.load_gap
            for name, metric, gap in ((CLOCK_BELOW_JOB, m.SM_CLOCK, self.clock_gap),
                                      (POWER_BELOW_JOB, m.POWER_USAGE, self.power_gap)):
                if (values := _column(view, metric, j)) is None:
                    continue
                with np.errstate(invalid="ignore"):
                    low = equal_load & (values < job_reference(values, job, n_jobs, self.min_peers) * (1 - gap))
                out[name] = self._held(name, view, low)
        return out

    def _below_own(self, view: CycleView, load: FloatArray, power: FloatArray) -> BoolArray:
        """Each GPU drawing `power_gap` less than it did itself at this utilisation: its power against a line
        through its own (utilisation, power) history (exponentially weighted least squares, forgetting over
        `own_half_life_s`, after `own_min_s` of data while working). A GPU given a new pod starts over (another
        model draws otherwise), and a sample found low teaches nothing: a GPU held slow for hours does not become
        its own measure."""
        slots, n = view.slots, view.n_slots
        self._own = grow(self._own, n, 0.0)  # count, mean load, mean power, mean load², mean load × power
        self._own_pod.extend([None] * (n - len(self._own_pod)))
        if view.frame.gpus is not self._own_labels:  # the pods move between cycles, not between a cycle's samples
            self._own_labels = view.frame.gpus
            for slot, pod in zip(slots.tolist(), view.frame.gpus.pod, strict=True):
                if self._own_pod[slot] != pod:
                    self._own_pod[slot] = pod
                    self._own[slot] = 0.0
        own = self._own[slots]
        count, mx, my, mxx, mxy = own.T
        with np.errstate(invalid="ignore", divide="ignore"):
            working = np.isfinite(load) & np.isfinite(power) & (load >= self.own_min_load)
            var, cov = mxx - mx * mx, mxy - mx * my
            slope = np.where(var > 1e-4, cov / var, 0.0)
            expected = my + slope * (load - mx)
            known = working & (count >= view.samples(self.own_min_s)) & (expected > 0)
            low = known & (power < expected * (1 - self.power_gap))
        learn = working & ~low
        alpha = np.maximum(rate_per_sample(self.own_half_life_s, view.step_s), 1.0 / (count + 1.0))[:, None]
        sample = np.stack([np.ones_like(load), load, power, load * load, load * power], axis=1)
        updated = own + alpha * (sample - own)
        updated[:, 0] = count + 1.0
        self._own[slots[learn]] = updated[learn]
        return np.asarray(low)

    def _counter_rose(self, name: str, slots: IntArray, ts: float, value: FloatArray, n: int) -> BoolArray:
        last = self._last[name] = grow(self._last.get(name, np.zeros(0)), n, np.nan)
        rose_at = self._rose_at[name] = grow(self._rose_at.get(name, np.zeros(0)), n, -np.inf)
        with np.errstate(invalid="ignore"):
            rose = value > last[slots]
        rose_at[slots[rose]] = ts
        seen = np.isfinite(value)
        last[slots[seen]] = value[seen]
        return np.asarray(ts - rose_at[slots] <= self.violation_window_s)

    def _held(self, name: str, view: CycleView, on: BoolArray) -> BoolArray:
        slots, n = view.slots, view.n_slots
        run = self._runs[name] = grow(self._runs.get(name, np.zeros(0)), n, 0.0)
        run[slots] = np.where(on, run[slots] + 1, 0.0)
        return np.asarray(run[slots] >= view.samples(self.persist_s))

    def _grouping(self, labels: GpuLabels) -> tuple[GpuLabels, IntArray, int, IntArray, int]:
        if self._groups is None or self._groups[0] != labels:
            # a Deployment's replicas serve independently: equal utilisation is not equal work among them
            job, job_names = group_ids([None if deployment_of(p, ns) else job_of(p, ns)
                                        for p, ns in zip(labels.pod, labels.namespace, strict=True)])
            node, node_names = group_ids(list(labels.hostname))
            self._groups = (labels, job, len(job_names), node, len(node_names))
        return self._groups


def corroborate(finding: Finding, agree: list[str]) -> Finding:
    """The finding with its agreeing signals (added to any it brought) and never critical without one."""
    brought = list(finding.evidence.get("signals", []))
    signals = [*brought, *(s for s in agree if s not in brought)]
    evidence: dict[str, Any] = {**finding.evidence, "corroborated": bool(signals), "signals": signals}
    severity = finding.severity
    if not signals and severity == Severity.CRITICAL:
        severity = Severity.WARNING
    return replace(finding, evidence=evidence, severity=severity)


def _column(view: CycleView, metric: str, j: int) -> FloatArray | None:
    arr = view.metric(metric)
    return None if arr is None else arr[:, j]
