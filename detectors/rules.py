"""Exact rules for hard signals: XIDs, double-bit ECC, row remapping, a GPU gone from the bus, node not
Ready, temperature limits, an error counter above NVIDIA's rate limit. Each rule is a streaming stage: it keeps
the last values it saw per GPU slot."""

from __future__ import annotations

from collections import deque
from dataclasses import MISSING, dataclass, field, fields
from typing import Protocol

import numpy as np

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FloatArray
from detectors.stream import BoolArray, CycleView, IntArray, OnsetTracker, gpu_finding_fields, grow
from detectors.xid import lookup


class Stage(Protocol):
    """A streaming detector: sees only the new columns of each cycle, keeps its own state."""

    name: str

    def update(self, view: CycleView) -> list[Finding]: ...


class _LastValue:
    """The last finite value seen per slot for one series."""

    def __init__(self) -> None:
        self.values: FloatArray = np.zeros(0)

    def previous(self, view: CycleView) -> FloatArray:
        self.values = grow(self.values, view.n_slots, np.nan)
        return self.values[view.slots]

    def remember(self, view: CycleView, column: FloatArray) -> None:
        ok = np.isfinite(column)
        self.values[view.slots[ok]] = column[ok]


@dataclass
class XidRule:
    """A new XID code on a GPU (the exporter's gauge holds the last code: a change is a new event).

    Codes NVIDIA says to count and trend are reported as info, raised to warning when `trend_count`
    of them arrive within `trend_window_s` on one GPU.
    """

    trend_window_s: float = 3600.0
    trend_count: int = 3
    name: str = "rules.xid"
    _last: _LastValue = field(default_factory=_LastValue)
    _recent: dict[int, deque[float]] = field(default_factory=dict)

    def update(self, view: CycleView) -> list[Finding]:
        xid = view.metric(m.XID_ERRORS)
        if xid is None:
            return []
        out: list[Finding] = []
        for j, ts in view.columns():
            col = xid[:, j]
            prev = self._last.previous(view)
            new = np.isfinite(col) & (col > 0) & (col != prev)
            for row in np.flatnonzero(new):
                out.append(self._finding(view, int(row), ts, int(col[row]), prev[row]))
            self._last.remember(view, col)
        return out

    def _finding(self, view: CycleView, row: int, ts: float, code: int, prev: float) -> Finding:
        entry = lookup(code)
        severity = entry.severity
        evidence: dict[str, object] = {
            "xid": code, "name": entry.name, "family": entry.family, "action": entry.action,
            "previous_xid": float(prev) if np.isfinite(prev) else None,
        }
        if entry.action == "count_and_trend":
            recent = self._recent.setdefault(int(view.slots[row]), deque())
            recent.append(ts)
            while recent and recent[0] < ts - self.trend_window_s:
                recent.popleft()
            evidence["count_in_window"] = len(recent)
            evidence["window_s"] = self.trend_window_s
            if len(recent) >= self.trend_count:
                severity = Severity.WARNING
        return Finding(ts=ts, kind=entry.kind, severity=severity, score=1.0, detector=self.name,
                       evidence=evidence, **gpu_finding_fields(view, row))


@dataclass
class CounterIncreaseRule:
    """Any increase of a counter that should never move (double-bit ECC, uncorrectable remapped rows)."""

    metric: str
    kind: FindingKind
    severity: Severity
    name: str
    _last: _LastValue = field(default_factory=_LastValue)

    def update(self, view: CycleView) -> list[Finding]:
        arr = view.metric(self.metric)
        if arr is None:
            return []
        out: list[Finding] = []
        for j, ts in view.columns():
            col = arr[:, j]
            prev = self._last.previous(view)
            inc = np.isfinite(col) & np.isfinite(prev) & (col > prev)
            for row in np.flatnonzero(inc):
                out.append(Finding(
                    ts=ts, kind=self.kind, severity=self.severity, score=1.0,
                    detector=self.name,
                    evidence={"metric": self.metric, "previous": float(prev[row]), "value": float(col[row]),
                              "increase": float(col[row] - prev[row])},
                    **gpu_finding_fields(view, int(row))))
            self._last.remember(view, col)
        return out


@dataclass
class LevelRule:
    """A gauge at or above a limit; reported once per episode, re-armed below `limit - hysteresis`.

    With `hold_s`, reported only once the episode has lasted that long in data time (no sample below `limit -
    hysteresis` since it began; a scrape gap neither ends nor extends it, and it needs `min_samples` samples):
    a persisting fact, so the finding opens an incident by itself (`persistent`). A GPU held at its slowdown
    temperature throttles for as long as it stays there; one sample over the limit is a moment's heat.
    """

    metric: str
    limit: float
    kind: FindingKind
    severity: Severity
    name: str
    hysteresis: float = 0.0
    hold_s: float = 0.0
    min_samples: int = 3
    _state: OnsetTracker = field(default_factory=OnsetTracker)
    _since: FloatArray = field(default_factory=lambda: np.zeros(0))  # when each slot's episode began (NaN: none)
    _count: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # samples in the episode

    def __setstate__(self, state: dict[str, object]) -> None:
        """A rule pickled by an older version lacks the newer fields: they start from their defaults."""
        for f in fields(self):
            if f.name not in state:
                setattr(self, f.name, f.default_factory() if f.default is MISSING else f.default)  # type: ignore[operator]
        self.__dict__.update(state)

    def update(self, view: CycleView) -> list[Finding]:
        arr = view.metric(self.metric)
        if arr is None:
            return []
        self._since = grow(self._since, view.n_slots, np.nan)
        self._count = grow(self._count, view.n_slots, 0)
        slots = view.slots
        out: list[Finding] = []
        for j, ts in view.columns():
            col = arr[:, j]
            finite = np.isfinite(col)
            over = finite & (col >= self.limit)
            off = finite & (col < self.limit - self.hysteresis)
            since = self._since[slots]
            begins = over & ~np.isfinite(since)
            since = np.where(begins, ts, np.where(off, np.nan, since))
            count = np.where(off, 0, self._count[slots] + (finite & np.isfinite(since)))
            self._since[slots], self._count[slots] = since, count
            on = over if self.hold_s <= 0 else (
                finite & ~off & (ts - np.nan_to_num(since, nan=np.inf) >= self.hold_s) & (count >= self.min_samples))
            for row in self._state.step(slots, on, off):
                evidence: dict[str, object] = {"metric": self.metric, "value": float(col[row]), "limit": self.limit}
                if self.hold_s > 0:
                    evidence |= {"held_s": float(ts - since[row]), "hold_s": self.hold_s, "persistent": True}
                out.append(Finding(
                    ts=ts, kind=self.kind, severity=self.severity, score=1.0,
                    detector=self.name, evidence=evidence, **gpu_finding_fields(view, int(row))))
        return out


@dataclass
class CounterRateLimitRule:
    """An error counter rising faster than NVIDIA's limit for it, held for `hold_s` of data time.

    Held means the median of the counter's per-sample rates over the last `hold_s` is above `limit_per_s`:
    one burst (a single sample) moves no median, a link that keeps erroring does. Such a finding states a
    persisting fact, so it opens an incident by itself (`persistent`). Reported once per episode, re-armed once
    the median falls below half the limit. Gaps and counter resets (the counter going down, as after a driver
    reload) carry no rate; a window needs three quarters of its samples to decide either way.

    The windows are rings of the last rates per slot, with running counts of their finite samples and of those
    above the limit: a median above the limit needs more than half the samples above it, so the median is taken
    only there, and for the episodes under way (to end them); on a healthy fleet, nowhere.
    """

    metric: str
    limit_per_s: float
    kind: FindingKind
    name: str
    source: str
    hold_s: float = 300.0
    severity: Severity = Severity.WARNING
    _last: _LastValue = field(default_factory=_LastValue)
    _last_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    _rates: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # [slot, ring of the window's samples]
    _pos: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # each slot's next ring cell
    _finite: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # finite samples in the ring
    _over: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # samples above the limit
    _state: OnsetTracker = field(default_factory=OnsetTracker)

    def update(self, view: CycleView) -> list[Finding]:
        arr = view.metric(self.metric)
        if arr is None:
            return []
        self._size(view.n_slots, view.samples(self.hold_s))
        slots, needed, half = view.slots, int(np.ceil(0.75 * self._rates.shape[1])), self.limit_per_s / 2.0
        out: list[Finding] = []
        for j, ts in view.columns():
            col = arr[:, j]
            prev, prev_ts = self._last.previous(view), self._last_ts[slots]
            with np.errstate(invalid="ignore", divide="ignore"):
                step = (col - prev) / (ts - prev_ts)
            step[~np.isfinite(step) | (step < 0)] = np.nan
            self._push(slots, step)
            finite = self._finite[slots]
            decided = finite >= needed
            held, quiet = np.zeros(len(slots), dtype=bool), np.zeros(len(slots), dtype=bool)
            under_way = grow(self._state.active, self._rates.shape[0], False)[slots]
            hot = np.flatnonzero(decided & ((2 * self._over[slots] > finite) | under_way))
            median = np.full(len(slots), np.nan)
            if hot.size:
                median[hot] = np.nanmedian(self._rates[slots[hot]], axis=1)
                held[hot], quiet[hot] = median[hot] > self.limit_per_s, median[hot] < half
            for row in self._state.step(slots, held, quiet):
                window = self._rates[slots[row]]
                out.append(Finding(
                    ts=ts, kind=self.kind, severity=self.severity, score=1.0, detector=self.name,
                    evidence={"metric": self.metric, "rate_per_s": round(float(median[row]), 4),
                              "mean_rate_per_s": round(float(np.nanmean(window)), 4),
                              "limit_per_s": self.limit_per_s, "window_s": self.hold_s, "source": self.source,
                              "persistent": True},
                    **gpu_finding_fields(view, int(row))))
            self._last.remember(view, col)
            self._last_ts[slots[np.isfinite(col)]] = ts
        return out

    def _size(self, n: int, k: int) -> None:
        """Room for `n` slots with windows of `k` samples; a new `k` (the scrape interval changed) starts every
        window again."""
        self._last_ts = grow(self._last_ts, n, np.nan)
        if self._rates.shape[1] != k:
            self._rates = np.full((self._rates.shape[0], k), np.nan)
            self._pos, self._finite, self._over = (np.zeros(self._rates.shape[0], dtype=np.int64) for _ in range(3))
        if self._rates.shape[0] < n:
            self._rates = np.vstack([self._rates, np.full((n - self._rates.shape[0], k), np.nan)])
            self._pos, self._finite, self._over = (grow(a, n, 0) for a in (self._pos, self._finite, self._over))

    def _push(self, slots: IntArray, step: FloatArray) -> None:
        """Each slot's newest rate replaces its oldest in the ring, and the counts follow."""
        pos = self._pos[slots]
        old = self._rates[slots, pos]
        with np.errstate(invalid="ignore"):
            self._finite[slots] += np.isfinite(step).astype(np.int64) - np.isfinite(old)
            self._over[slots] += (step > self.limit_per_s).astype(np.int64) - (old > self.limit_per_s)
        self._rates[slots, pos] = step
        self._pos[slots] = (pos + 1) % self._rates.shape[1]


@dataclass
class GpuLostRule:
    """A GPU whose series all vanish for `grace_s`, and for two scrape intervals at least (fallen off the bus,
    or its exporter gone).

    Covers both shapes a connector may hand over: the row present with NaN everywhere, or the row
    missing from the frame altogether (the slot is remembered from earlier cycles).
    """

    # Two 15 s scrape steps: one missed scrape is not a lost GPU, two in a row are (ARCHITECTURE's goal is
    # detection within two steps); at a longer scrape interval, two of those.
    grace_s: float = 30.0
    name: str = "rules.gpu_lost"
    _last_seen: FloatArray = field(default_factory=lambda: np.zeros(0))
    _lost: OnsetTracker = field(default_factory=OnsetTracker)

    def update(self, view: CycleView) -> list[Finding]:
        present_metrics = [a for name in m.PRESENCE_METRICS if (a := view.metric(name)) is not None]
        self._last_seen = grow(self._last_seen, view.n_slots, np.nan)
        all_slots = np.arange(view.n_slots)
        in_frame = np.zeros(view.n_slots, dtype=bool)
        in_frame[view.slots] = True
        out: list[Finding] = []
        grace = max(self.grace_s, 2 * view.step_s)
        for j, ts in view.columns():
            present = np.zeros(view.slots.shape[0], dtype=bool)
            for arr in present_metrics:
                present |= np.isfinite(arr[:, j])
            self._last_seen[view.slots[present]] = ts
            gap = ts - self._last_seen  # NaN for slots never seen: never lost
            on = gap >= grace
            off = gap < grace
            lost_now = [int(slot) for slot in self._lost.step(all_slots, on, off)]
            out += self._findings(view, lost_now, on, ts, in_frame)
        return out

    def _findings(self, view: CycleView, lost_now: list[int], on: BoolArray, ts: float,
                  in_frame: BoolArray) -> list[Finding]:
        """One critical finding per GPU that fell silent; but when every GPU of a node falls silent at once,
        the node's exporter went quiet (a scrape gap, an exporter restart, a reboot), which says nothing about
        the GPUs: one node-level suspicion, which a NotReady node or a lasting silence has to confirm."""
        by_host: dict[str, list[int]] = {}
        for slot in lost_now:
            by_host.setdefault(view.index.keys[slot][0], []).append(slot)
        out: list[Finding] = []
        for host, slots in by_host.items():
            known = [s for s, (h, _) in enumerate(view.index.keys) if h == host]
            if len(known) > 1 and all(on[s] for s in known):
                out.append(self._node_silent(host, ts, len(known), float(np.nanmax(self._last_seen[known]))))
            else:
                out += [self._finding(view, slot, ts, bool(in_frame[slot])) for slot in slots]
        return out

    def _node_silent(self, host: str, ts: float, gpus: int, last: float) -> Finding:
        return Finding(ts=ts, hostname=host, gpu=None, uuid=None, kind=FindingKind.GPU_LOST, severity=Severity.WARNING,
                       score=0.3, detector=self.name,
                       evidence={"all_gpus": gpus, "last_seen": last, "silent_s": ts - last, "corroborated": False,
                                 "signals": []})

    def _finding(self, view: CycleView, slot: int, ts: float, in_frame: bool) -> Finding:
        hostname, gpu = view.index.keys[slot]
        last = float(self._last_seen[slot])
        return Finding(
            ts=ts, hostname=hostname, gpu=gpu, uuid=view.index.uuids[slot], kind=FindingKind.GPU_LOST,
            severity=Severity.CRITICAL, score=1.0, detector=self.name,
            evidence={"last_seen": last, "silent_s": ts - last, "row_in_frame": bool(in_frame)})


@dataclass
class NodeNotReadyRule:
    """kube-state-metrics says a node is not Ready (the Ready=true condition reads 0).

    A node that was already cordoned when it went NotReady was taken out of service first: a driver upgrade,
    a planned reboot, someone's maintenance. That is reported as a suspicion no second signal confirms (a
    warning with `cordoned_before: true`), so it pages nobody; gpuops' own cordons are told apart later, by
    the incident service, which knows its own actions."""

    name: str = "rules.node_not_ready"
    _ready: dict[str, bool] = field(default_factory=dict)
    _cordoned: dict[str, bool] = field(default_factory=dict)

    def update(self, view: CycleView) -> list[Finding]:
        arr = view.node_metric(m.NODE_READY)
        if arr is None:
            return []
        cordon = view.node_metric(m.NODE_UNSCHEDULABLE)
        out: list[Finding] = []
        nodes = view.frame.nodes
        for j, ts in view.columns():
            for i, node in enumerate(nodes):
                v = arr[i, j]
                if not np.isfinite(v):
                    continue
                ready = bool(v >= 0.5)
                if not ready and self._ready.get(node, True):
                    # Kubernetes taints a NotReady node but never cordons it: a cordon seen with the NotReady
                    # sample was someone's too (a drain of an empty node and a reboot fit in one scrape)
                    now_cordoned = cordon is not None and bool(np.nan_to_num(cordon[i, j]) >= 0.5)
                    out.append(self._finding(node, ts, float(v), self._cordoned.get(node, False) or now_cordoned))
                self._ready[node] = ready
                if ready and cordon is not None and np.isfinite(cordon[i, j]):
                    self._cordoned[node] = bool(cordon[i, j] >= 0.5)
        return out

    def _finding(self, node: str, ts: float, value: float, cordoned: bool) -> Finding:
        evidence: dict[str, object] = {"metric": m.NODE_READY, "value": value, "cordoned_before": cordoned}
        if cordoned:
            evidence |= {"corroborated": False, "signals": []}
        return Finding(ts=ts, hostname=node, gpu=None, uuid=None, kind=FindingKind.NODE_NOT_READY,
                       severity=Severity.WARNING if cordoned else Severity.CRITICAL, score=0.5 if cordoned else 1.0,
                       detector=self.name, evidence=evidence)


@dataclass(frozen=True)
class RuleLimits:
    """Limits of the level rules. Defaults suit data-centre parts (H100/A100 slow down near 87-90 °C)."""

    temp_throttle_c: float = 87.0
    temp_shutdown_c: float = 92.0
    temp_hysteresis_c: float = 3.0
    temp_hold_s: float = 300.0
    pcie_replays_per_min: float = 8.0


def default_rules(limits: RuleLimits | None = None) -> list[Stage]:
    """The rule stages in the order they run."""
    lim = limits or RuleLimits()
    return [
        XidRule(),
        CounterIncreaseRule(m.ECC_DBE_VOL_TOTAL, FindingKind.ECC, Severity.CRITICAL, "rules.ecc_dbe"),
        CounterIncreaseRule(m.UNCORRECTABLE_REMAPPED_ROWS, FindingKind.ROW_REMAP, Severity.WARNING,
                            "rules.remapped_rows"),
        LevelRule(m.ROW_REMAP_FAILURE, 1.0, FindingKind.ROW_REMAP, Severity.CRITICAL, "rules.row_remap_failure", 0.5),
        LevelRule(m.GPU_TEMP, lim.temp_throttle_c, FindingKind.THERMAL, Severity.WARNING, "rules.temp_throttle",
                  lim.temp_hysteresis_c),
        # the same limit held: a GPU kept at its slowdown temperature for minutes is throttling its work
        LevelRule(m.GPU_TEMP, lim.temp_throttle_c, FindingKind.THERMAL, Severity.WARNING, "rules.temp_throttle_held",
                  lim.temp_hysteresis_c, hold_s=lim.temp_hold_s),
        LevelRule(m.GPU_TEMP, lim.temp_shutdown_c, FindingKind.THERMAL, Severity.CRITICAL, "rules.temp_shutdown",
                  lim.temp_hysteresis_c),
        # DCGM's hardware limits (dcgm_gpu_hardware_limits.h): at most 8 PCIe replays a minute, the most the
        # driver recommends; its health watch reports more as a failing PCIe link to reseat or replace
        CounterRateLimitRule(m.PCIE_REPLAY_COUNTER, lim.pcie_replays_per_min / 60.0, FindingKind.PCIE,
                             "rules.pcie_replay_rate", f"DCGM limit: {lim.pcie_replays_per_min:g} PCIe replays/min"),
        GpuLostRule(),
        NodeNotReadyRule(),
    ]
