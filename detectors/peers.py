"""Peer comparison: a GPU against the other GPUs of the same job and of the same node.

GPUs of one distributed job run in lock step. A GPU far less busy than its job's median, or one whose SM
clock is held far below its busy peers' (throttled: the others wait for it at every collective), is a
straggler. A job of two GPUs has no median that stands for it: each GPU is judged against the other, and only
by its clock (the less busy of two may be the one waiting, or the slow one: engine activity counts time on some
fleets and work on others): of two GPUs both working (`busy_level`), the one clocked `clock_gap` below the other
holds the job back. A Deployment's replicas
(`<name>-<replicaset hash>-<5 chars>`) serve independently, each its own
share of the requests: one less busy than the others is load balancing, not a straggler. Their clocks are
another matter: working GPUs of one model run at the same clock whatever requests they serve (the driver boosts
a GPU that has work to the same clock, short of a power or thermal limit), so a replica clocked `clock_gap` below
the median of its Deployment's working replicas on that model (three at least; working: activity at
`working_clock_level` or more) is held slow, and is reported as a straggler with `replica` in its evidence. It
serves its share of the requests slower; its pod is to move off that GPU. A GPU much hotter
than the other GPUs of its node points at cooling, not at the workload.

**Hung jobs.** A hang is utilisation pinned high with no real work, never idleness: a job that pauses
(checkpoints, evaluation, a notebook waiting for its user: near-zero utilisation with memory held) is not
hung. A collective that never completes spins: the engines read busy while the tensor pipes and DRAM are
still and the power falls towards idle. Decided per GPU, on what the fleet exports:
- with a profiling work series (`DCGM_FI_PROF_PIPE_TENSOR_ACTIVE` and/or `DCGM_FI_PROF_DRAM_ACTIVE`): engine
  activity (`DCGM_FI_PROF_GR_ENGINE_ACTIVE`, else `DCGM_FI_DEV_GPU_UTIL`) at or above `pinned_level`, every
  exported work series at or below `idle_level`, with memory held, and (where power is exported) power at most
  `near_idle_power` of what it drew working on its current allocation, for `spin_persist_s` (3 min). A job that
  hangs before it ever computed (its ranks met, then the first collective never completed) has no working power
  of its own: there the power must be at most `cold_power_share` of the enforced power limit
  (`DCGM_FI_DEV_POWER_MGMT_LIMIT`), and without that series such a GPU is not judged. Full power with the tensor
  pipes still is other work (CUDA cores), not a spin;
- without them: `DCGM_FI_DEV_GPU_UTIL` at or above `pinned_level` and power at most `near_idle_power` of the
  most it drew at pinned utilisation (or `cold_power_share` of the power limit), for `unprofiled_persist_s`
  (10 min). Without the power series either, hung-job detection is off: utilisation alone cannot tell a hang
  from work.

**Job grouping.** A GPU's job is its pod's job (`domain.jobs.job_of`: `namespace/base`, the pod name without
the suffixes Kubernetes and the training operators add). GPUs without a pod have no job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FloatArray, GpuLabels
from detectors.stream import (
    BoolArray,
    CycleView,
    IntArray,
    OnsetTracker,
    finite_or_none,
    gpu_finding_fields,
    grow,
    rate_per_sample,
)
from domain.jobs import DEPLOYMENT_SUFFIX, job_of


def group_ids(keys: list[str | None]) -> tuple[IntArray, list[str]]:
    """Integer group id per row (-1 for none) and the group names."""
    names: dict[str, int] = {}
    ids = np.full(len(keys), -1, dtype=np.int64)
    for row, key in enumerate(keys):
        if key is not None:
            ids[row] = names.setdefault(key, len(names))
    return ids, list(names)


def group_median(values: FloatArray, groups: IntArray, n_groups: int) -> tuple[FloatArray, FloatArray]:
    """Per-group median of the finite values, and the count of finite values per group. With no group at all
    (no GPU runs a job) both hold one empty group, so that rows outside every group (-1, masked by the caller)
    can still index them."""
    ok = np.isfinite(values) & (groups >= 0)
    g, v = groups[ok], values[ok]
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    counts = np.bincount(g, minlength=max(n_groups, 1)).astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    med = np.full(max(n_groups, 1), np.nan)
    has = counts > 0
    c = counts[has].astype(np.int64)
    lo = starts[has] + (c - 1) // 2
    hi = starts[has] + c // 2
    med[has] = 0.5 * (v[lo] + v[hi])
    return med, counts


def pair_other(values: FloatArray, groups: IntArray, n_groups: int) -> FloatArray:
    """For each row of a group of exactly two finite values, the other row's value; NaN elsewhere."""
    med, count = group_median(values, groups, n_groups)
    idx = np.maximum(groups, 0)
    with np.errstate(invalid="ignore"):
        other = 2.0 * med[idx] - values  # of two values, the median is their mean
    return np.where((groups >= 0) & (count[idx] == 2) & np.isfinite(values), other, np.nan)


def job_reference(values: FloatArray, groups: IntArray, n_groups: int, min_peers: int) -> FloatArray:
    """What each row is measured against in its group: the median of the group's finite values when it has
    `min_peers` of them (three at least), the other row's value when the group is a pair (two GPUs have no
    median that stands for the job: each is judged against the other), NaN otherwise (no group, a value
    missing, or too few)."""
    med, count = group_median(values, groups, n_groups)
    idx = np.maximum(groups, 0)
    enough = (groups >= 0) & (count[idx] >= max(min_peers, 3))
    return np.where(enough, med[idx], pair_other(values, groups, n_groups))


@dataclass
class _Groups:
    labels: GpuLabels
    job: IntArray
    job_names: list[str]
    node: IntArray
    node_names: list[str]
    replica: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # a Deployment's replicas on one GPU model: working, they run at the same clocks whatever requests they serve
    served: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_served: int = 0


@dataclass
class PeerComparison:
    """Stragglers and hung jobs (against the job's GPUs) and hot GPUs (against the node's GPUs)."""

    min_peers: int = 3
    busy_level: float = 0.3
    straggler_gap: float = 0.25
    idle_level: float = 0.05
    held_memory_mib: float = 1024.0
    hot_gap_c: float = 10.0
    persist_s: float = 60.0       # how long a straggler or a hot GPU lasts before it is reported
    clock_gap: float = 0.15       # a busy GPU this far below its job's median SM clock holds the job back
    working_clock_level: float = 0.1  # activity from which a GPU runs at its working clock, not its idle one
    working_level: float = 0.10   # tensor-pipe activity of a job that is computing
    spin_persist_s: float = 180.0  # busy engines without tensor work this long: the job is hung
    pinned_level: float = 0.9     # engine activity of a GPU that reads fully busy
    near_idle_power: float = 0.5  # share of its working power under which a pinned GPU does no real work
    cold_power_share: float = 0.25  # ... and, before it ever worked, of its enforced power limit
    unprofiled_persist_s: float = 600.0  # how long utilisation alone must read pinned at low power
    power_half_life_s: float = 4 * 3600.0  # the working power forgets slowly
    repeat_s: float = 60.0        # an episode still going on is reported again this often
    name: str = "peers"
    _groups: _Groups | None = None
    _straggle_run: FloatArray = field(default_factory=lambda: np.zeros(0))
    _spin_run: FloatArray = field(default_factory=lambda: np.zeros(0))
    _spin_since: FloatArray = field(default_factory=lambda: np.zeros(0))
    _hung_age: FloatArray = field(default_factory=lambda: np.zeros(0))
    _was_working: FloatArray = field(default_factory=lambda: np.zeros(0))
    _working_power: FloatArray = field(default_factory=lambda: np.zeros(0))
    _hot_run: FloatArray = field(default_factory=lambda: np.zeros(0))
    _straggler: OnsetTracker = field(default_factory=OnsetTracker)
    _hung: OnsetTracker = field(default_factory=OnsetTracker)
    _hot: OnsetTracker = field(default_factory=OnsetTracker)

    def __setstate__(self, state: dict[str, object]) -> None:
        """A state pickled by an older version lacks the newer fields: they start from their defaults."""
        self.__dict__.update(PeerComparison().__dict__)
        self.__dict__.update(state)
        self._groups = None  # regrouped at the next cycle, with the groups this version keeps

    def _grouping(self, labels: GpuLabels) -> _Groups:
        if self._groups is None or self._groups.labels != labels:
            jobs = [job_of(p, ns) for p, ns in zip(labels.pod, labels.namespace, strict=True)]
            job, job_names = group_ids(jobs)
            node, node_names = group_ids(list(labels.hostname))
            replica = np.fromiter((bool(DEPLOYMENT_SUFFIX.search(p)) for p in labels.pod), dtype=bool,
                                  count=len(labels))
            served, served_names = group_ids([f"{j}\x00{model}" if r and j else None for j, model, r
                                              in zip(jobs, labels.model_name, replica, strict=True)])
            self._groups = _Groups(labels, job, job_names, node, node_names, replica, served, len(served_names))
        return self._groups

    def update(self, view: CycleView) -> list[Finding]:
        activity = self._activity(view)
        temp = view.metric(m.GPU_TEMP)
        fb = view.metric(m.FB_USED)
        clock = view.metric(m.SM_CLOCK)
        if activity is None and temp is None:
            return []
        g = self._grouping(view.frame.gpus)
        n = view.n_slots
        for attr in ("_straggle_run", "_spin_run", "_hung_age", "_was_working", "_working_power", "_hot_run"):
            setattr(self, attr, grow(getattr(self, attr), n, 0.0))
        self._spin_since = grow(self._spin_since, n, np.nan)
        out: list[Finding] = []
        for j, ts in view.columns():
            if activity is not None:
                out += self._jobs(view, g, ts, activity[:, j], None if clock is None else clock[:, j])
                out += self._hangs(view, g, ts, j, activity[:, j], None if fb is None else fb[:, j])
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

    def _job_median(self, values: FloatArray, g: _Groups) -> FloatArray:
        med, _ = group_median(values, g.job, len(g.job_names))
        return np.where(g.job >= 0, med[np.maximum(g.job, 0)], np.nan)

    def _jobs(self, view: CycleView, g: _Groups, ts: float, act: FloatArray,
              clock: FloatArray | None = None) -> list[Finding]:
        slots = view.slots
        med, count = group_median(act, g.job, len(g.job_names))
        in_job = g.job >= 0
        job_med = np.where(in_job, med[np.maximum(g.job, 0)], np.nan)
        peers = np.where(in_job, count[np.maximum(g.job, 0)], 0.0)
        enough = peers >= self.min_peers
        with np.errstate(invalid="ignore"):
            busy_job = enough & (job_med >= self.busy_level)
            lockstep = ~g.replica if g.replica.shape == act.shape else np.ones_like(act, dtype=bool)
            busy_job &= lockstep
            low = busy_job & (act < job_med - self.straggler_gap)
            caught_up = ~enough | (act >= job_med - self.straggler_gap / 2)
        extra: dict[int, dict[str, float]] = {}
        if clock is not None:  # busy, but clocked far below its peers: the job waits for it
            job_clock = self._job_median(clock, g)
            with np.errstate(invalid="ignore"):
                held_back = busy_job & (act >= self.busy_level) & (clock < job_clock * (1 - self.clock_gap))
                caught_up &= ~(clock < job_clock * (1 - self.clock_gap / 2))
            low |= held_back
            extra = {int(r): {"sm_clock_mhz": float(clock[r]), "job_median_sm_clock_mhz": float(job_clock[r])}
                     for r in np.flatnonzero(held_back)}
            pair_slow, pair_extra = self._slow_in_pair(g, act, clock, lockstep)
            low |= pair_slow  # caught up as above: its clock back near the pair's mean
            extra.update(pair_extra)
            if g.served.shape == act.shape:
                slow, replica_ok, replica_extra = self._slow_replicas(g, act, clock)
                low |= slow
                caught_up = np.where(g.replica, replica_ok, caught_up)
                extra.update(replica_extra)
        run = np.where(low, self._straggle_run[slots] + 1, 0.0)
        self._straggle_run[slots] = run
        persist = view.samples(self.persist_s)
        onsets = self._straggler.step(slots, run >= persist, caught_up)
        out = [self._finding(view, int(r), ts, FindingKind.STRAGGLER, act, job_med, peers, g, extra.get(int(r)))
               for r in self._with_repeats(view, onsets, run - persist)]

        return out

    def _slow_in_pair(self, g: _Groups, act: FloatArray, clock: FloatArray, lockstep: BoolArray
                      ) -> tuple[BoolArray, dict[int, dict[str, float]]]:
        """A job of two GPUs, each judged against the other (module docstring): of two working GPUs, the one
        clocked `clock_gap` below the other holds it back (the one waiting for it spins at its full clock); a pair
        that is not working has idle clocks, not slow ones. The slow rows and their evidence."""
        other_act = pair_other(act, g.job, len(g.job_names))
        other_clock = pair_other(clock, g.job, len(g.job_names))
        pair = lockstep & np.isfinite(other_act) & np.isfinite(other_clock)
        with np.errstate(invalid="ignore"):
            working = pair & (act >= self.busy_level) & (other_act >= self.busy_level)
            slow = working & (clock < other_clock * (1 - self.clock_gap))
        extra = {int(r): {"sm_clock_mhz": float(clock[r]), "peer_sm_clock_mhz": float(other_clock[r]),
                          "peer_activity": float(other_act[r])} for r in np.flatnonzero(slow)}
        return slow, extra

    def _slow_replicas(self, g: _Groups, act: FloatArray, clock: FloatArray
                       ) -> tuple[BoolArray, BoolArray, dict[int, dict[str, float]]]:
        """Replicas of a Deployment clocked `clock_gap` below the median of its working replicas on the same GPU
        model (module docstring). The slow rows, the rows caught up, and the evidence of the slow ones."""
        with np.errstate(invalid="ignore"):
            working = act >= self.working_clock_level
            ref, count = group_median(np.where(working, clock, np.nan), g.served, g.n_served)
            in_group = g.replica & (g.served >= 0)
            ref_row = np.where(in_group, ref[np.maximum(g.served, 0)], np.nan)
            enough = in_group & (count[np.maximum(g.served, 0)] >= self.min_peers)
            slow = enough & working & (clock < ref_row * (1 - self.clock_gap))
            ok = ~enough | ~working | ~(clock < ref_row * (1 - self.clock_gap / 2))
        extra = {int(r): {"sm_clock_mhz": float(clock[r]), "deployment_median_sm_clock_mhz": float(ref_row[r]),
                          "replica": 1.0} for r in np.flatnonzero(slow)}
        return slow, ok, extra

    def _hangs(self, view: CycleView, g: _Groups, ts: float, j: int, act: FloatArray,
               fb: FloatArray | None) -> list[Finding]:
        """GPUs pinned busy with no real work (module docstring); one episode per GPU, repeated while it lasts."""
        slots = view.slots
        _, count = group_median(act, g.job, len(g.job_names))
        in_job = (g.job >= 0) & (count[np.maximum(g.job, 0)] >= self.min_peers)
        if g.replica.shape == in_job.shape:  # a Deployment's replicas serve apart: one hangs alone
            in_job &= ~g.replica

        def lockstep(values: FloatArray) -> FloatArray:
            """A job's GPUs run in lock step: its median where it has enough GPUs, a GPU's own value else (and
            always for a Deployment's replica)."""
            return np.where(in_job, self._job_median(values, g), values)

        act = lockstep(act)
        work = {name: lockstep(a[:, j]) for name in (m.PIPE_TENSOR_ACTIVE, m.DRAM_ACTIVE)
                if (a := view.metric(name)) is not None}
        power_arr, util_arr = view.metric(m.POWER_USAGE), view.metric(m.GPU_UTIL)
        power = None if power_arr is None else power_arr[:, j]
        held = np.ones_like(act, dtype=bool) if fb is None else np.nan_to_num(fb) >= self.held_memory_mib
        profiled = np.zeros_like(held)
        idle_work = np.ones_like(held)
        working = np.zeros_like(held)
        for series in work.values():
            profiled |= np.isfinite(series)
            with np.errstate(invalid="ignore"):
                idle_work &= ~(series > self.idle_level)
                working |= series >= self.working_level
        with np.errstate(invalid="ignore"):
            pinned = act >= self.pinned_level
            util_pinned = (np.zeros_like(held) if util_arr is None
                           else lockstep(util_arr[:, j]) >= 100 * self.pinned_level)
        was_working = self._was_working[slots] > 0
        # unprofiled GPUs "work" while pinned; the decaying maximum keeps the power of real work, not of a spin
        self._remember_working_power(view, np.where(profiled, working, util_pinned), power)
        ref = self._working_power[slots]
        low_power = np.zeros_like(held)
        if power is not None:
            with np.errstate(invalid="ignore"):
                low_power = (ref > 0) & (power <= self.near_idle_power * ref)
        power_ok = low_power | (power is None) | ~(ref > 0)
        # A job that hangs before it ever computed (its ranks met at the rendezvous, then the first collective never
        # completed) has no working power of its own to compare with: the GPU's power limit stands in for it.
        limit_arr = view.metric(m.POWER_MGMT_LIMIT)
        cold_low = np.zeros_like(held)
        if power is not None and limit_arr is not None:
            with np.errstate(invalid="ignore"):
                cold_low = (limit_arr[:, j] > 0) & (power <= self.cold_power_share * limit_arr[:, j])
        spin = profiled & pinned & idle_work & held & ((was_working & power_ok) | (~was_working & cold_low))
        unprofiled = (~profiled & util_pinned & (low_power | cold_low) & held if power is not None
                      else np.zeros_like(held))
        released = ~held
        self._was_working[slots] = np.where(profiled & working & held, 1.0,
                                            np.where(released, 0.0, self._was_working[slots]))
        self._working_power[slots] = np.where(released, 0.0, self._working_power[slots])
        spin_run = np.where(spin, self._spin_run[slots] + 1, 0.0)
        self._spin_run[slots] = spin_run
        since = np.where(unprofiled, np.where(np.isfinite(self._spin_since[slots]), self._spin_since[slots], ts),
                         np.nan)
        self._spin_since[slots] = since
        long_unprofiled = unprofiled & (ts - np.nan_to_num(since, nan=ts) >= self.unprofiled_persist_s)
        hung = (spin_run >= view.samples(self.spin_persist_s)) | long_unprofiled
        age = np.where(hung, self._hung_age[slots] + 1, 0.0)
        self._hung_age[slots] = age
        onsets = self._hung.step(slots, hung, ~spin & ~unprofiled)
        out = []
        for r in self._with_repeats(view, onsets, age - 1):
            signals = ["engine_pinned" if profiled[r] else "utilisation_pinned"]
            signals += [f"no_{name.rsplit('_', 2)[-2].lower()}_work" for name in work if profiled[r]]
            if low_power[r] or cold_low[r]:
                signals.append("power_near_idle")
            evidence: dict[str, object] = {
                "basis": "profiling" if profiled[r] else "utilisation_and_power",
                "activity": finite_or_none(act[r]),
                "power_w": None if power is None else finite_or_none(power[r]),
                "working_power_w": finite_or_none(ref[r]) if ref[r] > 0 else None,
                **{name: finite_or_none(series[r]) for name, series in work.items()},
                "corroborated": True, "signals": signals,
            }
            if g.job[r] >= 0:
                evidence["job"] = g.job_names[g.job[r]]
            if g.replica.shape == act.shape and g.replica[r]:  # one replica hangs, not its Deployment
                evidence["replica"], evidence["pod"] = True, g.labels.pod[r]
            out.append(Finding(ts=ts, kind=FindingKind.HUNG_JOB, severity=Severity.WARNING, score=0.8,
                               detector=f"{self.name}.{FindingKind.HUNG_JOB}", evidence=evidence,
                               **gpu_finding_fields(view, r)))
        return out

    def _remember_working_power(self, view: CycleView, working: npt.NDArray[np.bool_],
                                power: FloatArray | None) -> None:
        if power is None:
            return
        slots = view.slots
        ref = self._working_power[slots] * (1.0 - rate_per_sample(self.power_half_life_s, view.step_s))
        with np.errstate(invalid="ignore"):
            self._working_power[slots] = np.where(working & np.isfinite(power), np.fmax(ref, power), ref)

    def _with_repeats(self, view: CycleView, onsets: IntArray, age: FloatArray) -> list[int]:
        """The rows whose episode starts now, and those whose episode is `repeat_s`, 2×… old: a
        job's trouble that lasts is reported again, so the incident service sees it persist (a lone report
        may be the consequence of a hard fault whose own signal arrives a little later)."""
        due = (age > 0) & (age % view.samples(self.repeat_s, at_least=1) == 0)
        due[onsets] = True
        return [int(r) for r in np.flatnonzero(due)]

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
        for r in self._hot.step(slots, run >= view.samples(self.persist_s), cooled):
            out.append(Finding(
                ts=ts, kind=FindingKind.THERMAL, severity=Severity.WARNING,
                score=float(min(1.0, (temp[r] - node_med[r]) / 30)),
                detector=f"{self.name}.node_thermal",
                evidence={"metric": m.GPU_TEMP, "value": float(temp[r]), "node_median": float(node_med[r]),
                          "node_gpus": int(count[g.node[r]])},
                **gpu_finding_fields(view, int(r))))
        return out

    def _finding(self, view: CycleView, row: int, ts: float, kind: FindingKind, act: FloatArray,
                 job_med: FloatArray, peers: FloatArray, g: _Groups,
                 extra: dict[str, float] | None = None) -> Finding:
        gap = float(job_med[row] - act[row]) if np.isfinite(act[row]) else float(job_med[row])
        return Finding(
            ts=ts, kind=kind, severity=Severity.WARNING, score=float(min(1.0, max(gap, 0.0) + 0.5)),
            detector=f"{self.name}.{kind}",
            evidence={"job": g.job_names[g.job[row]],
                      "activity": float(act[row]) if np.isfinite(act[row]) else None,
                      "job_median_activity": float(job_med[row]), "job_gpus": int(peers[row]),
                      "samples": view.samples(self.persist_s), "persist_s": self.persist_s, **(extra or {})},
            **gpu_finding_fields(view, row))
