"""Streaming anomaly models, vectorised over every GPU of the frame:

- `RobustBaseline`: per series, a Huber-clipped exponentially weighted mean and mean absolute deviation
  (a robust baseline that one outlier cannot drag), with an optional daily profile for seasonal series;
  `LoadConditionedClock`: the SM clock's baseline, judged only while the clock is not explained by its load
  (power capping, an idle GPU); the framebuffer's baseline judges only GPUs whose memory is normally stable;
- `CounterCusum`: one-sided CUSUM on the rate of error counters (SBE ECC, NVLink CRC, PCIe replays),
  standardised against the counter's own quiet-time rate; `CounterBurst`: a sparse counter (SBE ECC) that rises
  by a count within an hour no healthy part reaches; `CounterRateClimb`: a link's error rate (NVLink CRC, PCIe
  replays) climbing steadily towards the rate DCGM acts on;
- `MultivariateModel`: an IsolationForest per GPU model class on standardised metric vectors, refitted
  on a reservoir of past samples at fixed data-time intervals (never on the sample it scores);
- `PeerComparison` (in `detectors.peers`): a GPU against the other GPUs of its job and of its node.

Each keeps per-slot state between cycles and costs only the new samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.stats import chi2, poisson

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FloatArray
from detectors.rules import Stage
from detectors.stream import (
    BoolArray,
    CycleView,
    IntArray,
    OnsetTracker,
    gpu_finding_fields,
    grow,
    rate_per_sample,
    samples_in,
)


@dataclass
class _Ewm:
    """Per-slot exponentially weighted location and mean absolute deviation, Huber-clipped."""

    alpha: float
    clip: float
    mean: FloatArray = field(default_factory=lambda: np.zeros(0))
    dev: FloatArray = field(default_factory=lambda: np.zeros(0))
    count: FloatArray = field(default_factory=lambda: np.zeros(0))

    def ensure(self, n: int) -> None:
        self.mean = grow(self.mean, n, np.nan)
        self.dev = grow(self.dev, n, 0.0)
        self.count = grow(self.count, n, 0.0)

    def update(self, slots: IntArray, x: FloatArray, freeze: np.ndarray | None = None) -> None:
        ok = np.isfinite(x)
        if freeze is not None:
            ok &= ~freeze
        s, v = slots[ok], x[ok]
        mean, dev, count = self.mean[s], self.dev[s], self.count[s]
        first = ~np.isfinite(mean)
        mean = np.where(first, v, mean)
        # warm-up: plain running averages, then the fixed-alpha forgetting
        a = np.maximum(self.alpha, 1.0 / (count + 1.0))
        limit = self.clip * np.maximum(dev, 1e-9)
        resid = np.where(count >= 5, np.clip(v - mean, -limit, limit), v - mean)
        self.mean[s] = mean + a * resid
        self.dev[s] = np.where(first, 0.0, dev + a * (np.abs(resid) - dev))
        self.count[s] = count + 1.0


@dataclass
class RobustBaseline:
    """A gauge far from its own robust baseline for `persist_s` of data time.

    z = |x - mean| / (1.25 * mean absolute deviation), with a floor on the deviation (`min_dev`, in the
    metric's units) so a perfectly flat series does not alarm on noise. With `season_s`, the baseline runs
    on the residual from the mean of the sample's phase bin (e.g. its hour of day), scored once that bin
    has three samples: the daily shape is learnt instead of widening the deviation. `direction` keeps only
    deviations one way; with `stable_s`, a GPU is judged only after that long calm (a series that normally
    moves has no baseline to leave). Durations are data time (`detectors.stream.samples_in`). Samples that
    `expected` marks (a subclass's reason, e.g. the load explains them) are neither judged nor learnt.
    """

    metric: str
    kind: FindingKind
    min_dev: float
    half_life_s: float = 515.0   # the baseline's memory (a weight of 0.02 a sample at a 15 s scrape)
    z_on: float = 8.0
    z_off: float = 4.0
    persist_s: float = 45.0
    warmup_s: float = 450.0
    season_s: float | None = None
    season_bins: int = 24
    direction: Literal["both", "up", "down"] = "both"
    stable_s: float = 0.0
    name: str = ""
    _ewm: _Ewm = field(default_factory=lambda: _Ewm(0.02, 3.0))
    _calm: FloatArray = field(default_factory=lambda: np.zeros(0))
    _calm_at_start: FloatArray = field(default_factory=lambda: np.zeros(0))
    _season: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    _season_n: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    _run: FloatArray = field(default_factory=lambda: np.zeros(0))
    _state: OnsetTracker = field(default_factory=OnsetTracker)

    def __post_init__(self) -> None:
        self.name = self.name or f"baseline.{self.metric}"
        self._season = np.zeros((0, self.season_bins))
        self._season_n = np.zeros((0, self.season_bins))

    def update(self, view: CycleView) -> list[Finding]:
        arr = view.metric(self.metric)
        if arr is None:
            return []
        self._ewm.ensure(view.n_slots)
        step = view.step_s
        self._ewm.alpha = rate_per_sample(self.half_life_s, step)
        persist, warmup = samples_in(self.persist_s, step), samples_in(self.warmup_s, step)
        stable = samples_in(self.stable_s, step, at_least=0)
        self._run = grow(self._run, view.n_slots, 0.0)
        self._calm = grow(getattr(self, "_calm", np.zeros(0)), view.n_slots, 0.0)  # older states lack it
        self._calm_at_start = grow(getattr(self, "_calm_at_start", np.zeros(0)), view.n_slots, 0.0)
        if self.season_s is not None:
            self._season = grow(self._season, view.n_slots, 0.0)
            self._season_n = grow(self._season_n, view.n_slots, 0.0)
        slots = view.slots
        out: list[Finding] = []
        for j, ts in view.columns():
            raw = arr[:, j]
            x, offset = raw, np.zeros_like(raw)
            phase = int((ts % self.season_s) / self.season_s * self.season_bins) if self.season_s else 0
            if self.season_s is not None:
                # seasonal series: the baseline runs on the residual from the phase bin's mean
                offset = np.where(self._season_n[slots, phase] >= 3, self._season[slots, phase], np.nan)
                x = raw - offset
            base = self._ewm.mean[slots]
            dev = np.maximum(1.25 * self._ewm.dev[slots], self.min_dev)
            with np.errstate(invalid="ignore"):
                signed = (x - base) / dev
            z = np.abs(signed)
            expected = self.expected(view, j, ts)
            ready = (self._ewm.count[slots] >= warmup) & np.isfinite(z) & ~expected
            high = ready & (z >= self.z_on)
            if self.direction != "both":
                high &= signed > 0 if self.direction == "up" else signed < 0
            run = np.where(high, self._run[slots] + 1, 0.0)
            self._run[slots] = run
            calm = self._calm[slots]
            self._calm_at_start[slots] = np.where(high & (run == 1), calm, self._calm_at_start[slots])
            self._calm[slots] = np.where(ready & (z < self.z_off), calm + 1, np.where(ready, 0.0, calm))
            on = (run >= persist) & (self._calm_at_start[slots] >= stable)
            off = ~np.isfinite(z) | (z < self.z_off)
            for row in self._state.step(slots, on, off & ~on):
                out.append(Finding(
                    ts=ts, kind=self.kind, severity=Severity.WARNING,
                    score=float(min(1.0, z[row] / (2 * self.z_on))), detector=self.name,
                    evidence={"metric": self.metric, "value": float(raw[row]),
                              "baseline": float(base[row] + offset[row]),
                              "deviation": float(dev[row]), "z": float(z[row]), "samples": persist},
                    **gpu_finding_fields(view, int(row))))
            if self.season_s is not None:
                ok = np.isfinite(raw)
                s = slots[ok]
                n = self._season_n[s, phase]
                self._season[s, phase] += (raw[ok] - self._season[s, phase]) / np.minimum(n + 1.0, 10.0)
                self._season_n[s, phase] = n + 1.0
            self._ewm.update(slots, x, freeze=expected)
        return out

    def expected(self, view: CycleView, j: int, ts: float) -> BoolArray:
        """Rows whose sample `j` the load explains (none here; see `LoadConditionedClock`)."""
        return np.zeros(view.slots.shape[0], dtype=bool)


@dataclass
class LoadConditionedClock(RobustBaseline):
    """The SM clock against its baseline, only where the load does not explain it. A GPU at its power limit
    lowers its clock (power capping, by design), and an idle GPU parks it; neither is an anomaly, and neither
    is learnt. Capped means: `DCGM_FI_DEV_POWER_VIOLATION` rising, or power within `cap_share` of
    `DCGM_FI_DEV_POWER_MGMT_LIMIT`, where exported; else power within `cap_share` of the most this GPU has
    drawn for minutes (a capped GPU holds its power at the cap while the clock gives way; a slowdown from heat
    or a fault lowers the power with the clock). Without the power series this baseline is off."""

    metric: str = m.SM_CLOCK
    kind: FindingKind = FindingKind.ANOMALY
    min_dev: float = 100.0
    direction: Literal["both", "up", "down"] = "down"
    cap_share: float = 0.95
    idle_util: float = 10.0
    sustained_s: float = 300.0
    _violation: FloatArray = field(default_factory=lambda: np.zeros(0))
    _sustained: FloatArray = field(default_factory=lambda: np.zeros(0))
    _peak: FloatArray = field(default_factory=lambda: np.zeros(0))
    _last_ts: FloatArray = field(default_factory=lambda: np.zeros(0))

    def update(self, view: CycleView) -> list[Finding]:
        if view.metric(m.POWER_USAGE) is None:
            return []
        n = view.n_slots
        self._violation, self._last_ts = grow(self._violation, n, np.nan), grow(self._last_ts, n, np.nan)
        self._sustained, self._peak = grow(self._sustained, n, np.nan), grow(self._peak, n, 0.0)
        return super().update(view)

    def expected(self, view: CycleView, j: int, ts: float) -> BoolArray:
        slots = view.slots
        power_arr = view.metric(m.POWER_USAGE)
        assert power_arr is not None
        power = power_arr[:, j]
        capped = np.zeros(slots.shape[0], dtype=bool)
        if (violation := view.metric(m.POWER_VIOLATION)) is not None:
            with np.errstate(invalid="ignore"):
                capped |= violation[:, j] > self._violation[slots]
            seen = np.isfinite(violation[:, j])
            self._violation[slots[seen]] = violation[seen, j]
        limit = view.metric(m.POWER_MGMT_LIMIT)
        own_limit = np.isfinite(limit[:, j]) if limit is not None else np.zeros_like(capped)
        with np.errstate(invalid="ignore"):
            if limit is not None:
                capped |= own_limit & (power >= self.cap_share * limit[:, j])
            capped |= ~own_limit & (self._peak[slots] > 0) & (power >= self.cap_share * self._peak[slots])
        self._follow_power(slots, ts, power)
        if (util := view.metric(m.GPU_UTIL)) is not None:
            with np.errstate(invalid="ignore"):
                capped |= util[:, j] < self.idle_util
        return capped

    def _follow_power(self, slots: IntArray, ts: float, power: FloatArray) -> None:
        """The most power each GPU has drawn, smoothed over `sustained_s` (a spike caps nothing)."""
        ok = np.isfinite(power)
        s, p = slots[ok], power[ok]
        prev = self._sustained[s]
        w = 1.0 - np.exp(-np.nan_to_num(ts - self._last_ts[s], nan=0.0) / self.sustained_s)
        smooth = np.where(np.isfinite(prev), prev + w * (p - prev), p)
        self._sustained[s], self._last_ts[s] = smooth, ts
        self._peak[s] = np.fmax(self._peak[s], smooth)


@dataclass
class CounterCusum:
    """One-sided CUSUM on a counter's rate per second, standardised by its quiet-time mean and spread.

    S_t = max(0, S_{t-1} + (r_t - mu) / sigma - k); an alarm when S_t > h. The reference (mu, sigma)
    learns only while not alarmed, so a storm does not become the new normal. sigma has a floor of
    `min_rate` (per second) so a counter that never moved does not alarm on a single increment.
    """

    metric: str
    kind: FindingKind
    min_rate: float = 0.05
    half_life_s: float = 1035.0  # the reference's memory (a weight of 0.01 a sample at a 15 s scrape)
    k: float = 0.5
    h: float = 10.0
    warmup_s: float = 300.0
    name: str = ""
    _last: FloatArray = field(default_factory=lambda: np.zeros(0))
    _last_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    _ref: _Ewm = field(default_factory=lambda: _Ewm(0.01, 3.0))
    _s: FloatArray = field(default_factory=lambda: np.zeros(0))
    _state: OnsetTracker = field(default_factory=OnsetTracker)

    def __post_init__(self) -> None:
        self.name = self.name or f"cusum.{self.metric}"

    def update(self, view: CycleView) -> list[Finding]:
        arr = view.metric(self.metric)
        if arr is None:
            return []
        n = view.n_slots
        self._last = grow(self._last, n, np.nan)
        self._last_ts = grow(self._last_ts, n, np.nan)
        self._s = grow(self._s, n, 0.0)
        self._ref.ensure(n)
        self._ref.alpha = rate_per_sample(self.half_life_s, view.step_s)
        warmup = samples_in(self.warmup_s, view.step_s)
        slots = view.slots
        out: list[Finding] = []
        for j, ts in view.columns():
            v = arr[:, j]
            prev, prev_ts = self._last[slots], self._last_ts[slots]
            with np.errstate(invalid="ignore"):
                rate = (v - prev) / (ts - prev_ts)
            rate[~np.isfinite(rate) | (rate < 0)] = np.nan  # gaps and counter resets carry no rate
            ok = np.isfinite(rate)
            mu = self._ref.mean[slots]
            sigma = np.maximum(1.25 * self._ref.dev[slots], self.min_rate)
            ready = ok & (self._ref.count[slots] >= warmup)
            u = np.where(ready, (rate - mu) / sigma - self.k, 0.0)
            s = np.where(ready, np.maximum(0.0, self._s[slots] + u), self._s[slots])
            self._s[slots] = s
            alarm = s > self.h
            for row in self._state.step(slots, alarm, s == 0.0):
                out.append(Finding(
                    ts=ts, kind=self.kind, severity=Severity.WARNING,
                    score=float(min(1.0, s[row] / (4 * self.h))), detector=self.name,
                    evidence={"metric": self.metric, "rate_per_s": float(rate[row]),
                              "baseline_rate_per_s": float(mu[row]), "cusum": float(s[row]), "h": self.h},
                    **gpu_finding_fields(view, int(row))))
            self._ref.update(slots, rate, freeze=s > 0.0)
            _remember(self._last, self._last_ts, slots, v, ts)
        return out


def _placed_increase(last: FloatArray, last_ts: FloatArray, slots: IntArray, v: FloatArray, ts: float,
                     max_gap_s: float) -> tuple[FloatArray, FloatArray]:
    """A counter's increase at each of `slots` since its last sample (`last`, `last_ts`), and the time that covers:
    none, and no time, for a first sample, a reset (a decrease: a driver reload, an exporter restart) or an
    increase across a gap longer than `max_gap_s`, which cannot be placed in time."""
    with np.errstate(invalid="ignore"):
        rise, dt = v - last[slots], ts - last_ts[slots]
    placed = np.isfinite(rise) & (rise >= 0) & (dt <= max_gap_s)
    return np.where(placed, rise, 0.0), np.where(placed, dt, 0.0)


def _remember(last: FloatArray, last_ts: FloatArray, slots: IntArray, v: FloatArray, ts: float) -> BoolArray:
    """Keep each slot's latest reading (`v` at `ts`) where it has one; return where it had."""
    seen = np.isfinite(v)
    last[slots[seen]] = v[seen]
    last_ts[slots[seen]] = ts
    return seen


@dataclass
class CounterBurst:
    """A sparse error counter that rises by `min_count` or more within `window_s` of data time.

    Per-sample rates of a counter that moves a few times a day are all noise (one increment in a 15 s sample
    reads as 240 an hour), which is why `CounterCusum` floors its spread; a memory heading for an uncorrectable
    error logs correctable errors by the dozen an hour long before that floor is reached. Healthy GPU memory
    logs them rarely: most devices none for weeks, a small fraction several a day (Sridharan et al., "Memory
    Errors in Modern Systems", ASPLOS 2015); the NVIDIA driver reports a high single-bit error rate as XID 92.
    So the count over an hour is the test: `min_count` (10) within the hour is orders of magnitude past the
    healthy tail. A part may also log them steadily for weeks (a weak cell the ECC corrects every time) without
    heading anywhere, so the count must also be one the GPU's own rate before the window makes implausible
    (under `p_alarm` for a Poisson count at a generous upper bound of that rate: N + 2√N + 2 errors over the
    history before the window), and a GPU is judged only once a full window of its history precedes the window
    (a steady rate is learnt before it can alarm; a climb is not a steady rate).

    The count is the counter's own increase, summed from sample to sample: a decrease is a reset (a driver
    reload, an exporter restart) and counts nothing, and an increase across a gap longer than `max_gap_s` is
    not placed in time, so it counts nothing either. Snapshots every `window_s / 12` bound the window's
    resolution. A hard finding: the counter is exact, not a statistic of a noisy series."""

    metric: str
    kind: FindingKind
    min_count: float = 10.0
    p_alarm: float = 1e-6
    window_s: float = 3600.0
    max_gap_s: float = 600.0
    buckets: int = 12
    name: str = ""
    _first_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    _last: FloatArray = field(default_factory=lambda: np.zeros(0))
    _last_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    _total: FloatArray = field(default_factory=lambda: np.zeros(0))  # increases counted so far
    _snap: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (slot, bucket) totals …
    _snap_ts: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # … and when each was taken (-inf: never)
    _state: OnsetTracker = field(default_factory=OnsetTracker)

    def __post_init__(self) -> None:
        self.name = self.name or f"burst.{self.metric}"

    def _ensure(self, n: int) -> None:
        self._last, self._last_ts = grow(self._last, n, np.nan), grow(self._last_ts, n, np.nan)
        self._first_ts, self._total = grow(self._first_ts, n, np.nan), grow(self._total, n, 0.0)
        ring = self.buckets + 1
        if self._snap.shape[1] != ring:
            self._snap, self._snap_ts = np.zeros((0, ring)), np.zeros((0, ring))
        self._snap, self._snap_ts = grow(self._snap, n, 0.0), grow(self._snap_ts, n, -np.inf)

    def update(self, view: CycleView) -> list[Finding]:
        arr = view.metric(self.metric)
        if arr is None:
            return []
        self._ensure(view.n_slots)
        slots = view.slots
        bucket_s = self.window_s / self.buckets
        out: list[Finding] = []
        for j, ts in view.columns():
            v = arr[:, j]
            rise, _ = _placed_increase(self._last, self._last_ts, slots, v, ts, self.max_gap_s)
            self._total[slots] += rise
            total = self._total[slots]
            # a snapshot when the newest is a bucket old: the oldest snapshot still inside the window is the
            # total the count starts from (totals never fall, so it is the smallest inside the window)
            due = self._snap_ts[slots].max(axis=1) <= ts - bucket_s
            if due.any():
                rows = slots[due]
                oldest = np.argmin(self._snap_ts[rows], axis=1)
                self._snap[rows, oldest] = self._total[rows]
                self._snap_ts[rows, oldest] = ts
            inside = self._snap_ts[slots] >= ts - self.window_s
            logged = np.minimum(np.where(inside, self._snap[slots], np.inf).min(axis=1), total)
            count = total - logged
            # what it logged before the window, per window: the steady rate a climb must stand above
            since = np.where(inside, self._snap_ts[slots], np.inf).min(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                history = since - self._first_ts[slots]
                judged = history >= self.window_s - 1e-6
                before = np.where(judged, logged * self.window_s / history, np.nan)
                bound = np.where(judged, (logged + 2.0 * np.sqrt(logged) + 2.0) * self.window_s / history, np.inf)
            alarm = judged & (count >= self.min_count)
            if alarm.any():
                alarm[alarm] = poisson.sf(count[alarm] - 1.0, bound[alarm]) < self.p_alarm
            for row in self._state.step(slots, alarm, count < self.min_count / 2):
                out.append(Finding(
                    ts=ts, kind=self.kind, severity=Severity.WARNING,
                    score=float(min(1.0, 0.5 + count[row] / (10 * self.min_count))), detector=self.name,
                    evidence={"metric": self.metric, "count_in_window": float(count[row]),
                              "window_s": self.window_s, "min_count": self.min_count,
                              "count_per_window_before": float(before[row])},
                    **gpu_finding_fields(view, int(row))))
            seen = _remember(self._last, self._last_ts, slots, v, ts)
            first = slots[seen & np.isnan(self._first_ts[slots])]
            self._first_ts[first] = ts
        return out


# DCGM's health limits (`dcgm_gpu_hardware_limits.h`): NVLink CRC errors matter only at 100 a second and more;
# more than 8 PCIe replays a minute is a link to reseat or replace.
NVLINK_CRC_LIMIT_PER_S = 100.0
PCIE_REPLAY_LIMIT_PER_S = 8.0 / 60.0


@dataclass
class CounterRateClimb:
    """An error counter whose rate climbs steadily towards the rate at which it matters: a forecast.

    A link heading for failure logs its errors faster and faster (an NVLink's CRC errors, a PCIe link's replays)
    long before the rate reaches the limit that DCGM's health checks act on (`dcgm_gpu_hardware_limits.h`: NVLink
    CRC errors matter only at 100 a second and more; PCIe replays beyond 8 a minute). A steady rate, however
    high, is no climb (a link that has always logged its errors at that pace), and neither is a burst (a link
    retraining once) nor a step (a rate that moved to a new level and stays there).

    The count is summed per window of `window_s` from sample to sample (a decrease is a reset and counts nothing,
    nor does an increase across a gap longer than `max_gap_s`; the time those cover is the window's exposure). At
    each window's end, over the last `windows` windows (an hour): a Poisson regression of count on time (log
    rate linear in time, with the windows' exposures) whose slope is `min_z` standard errors above zero, whose fit
    a steady climb passes (deviance under the chi-square's `fit_quantile` for its degrees of freedom: a burst or a
    step fails it; at 6 standard errors, no window can hold fewer than 10 errors), and whose rate, followed
    forward, reaches `limit_per_s` within `horizon_s`. Windows are placed at their own times, so a gap between
    them bends nothing. Reported once per climb, as a persisting fact (it was watched climbing for the whole
    hour), with the expected time to the limit."""

    metric: str
    kind: FindingKind
    limit_per_s: float
    limit_label: str
    window_s: float = 600.0
    windows: int = 6
    min_z: float = 6.0
    fit_quantile: float = 0.99
    horizon_s: float = 6 * 3600.0
    max_gap_s: float = 600.0
    name: str = ""
    _last: FloatArray = field(default_factory=lambda: np.zeros(0))
    _last_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    _start: FloatArray = field(default_factory=lambda: np.zeros(0))   # the open window's start (NaN: none yet)
    _count: FloatArray = field(default_factory=lambda: np.zeros(0))   # … its count and exposure so far
    _cover: FloatArray = field(default_factory=lambda: np.zeros(0))
    _timed: FloatArray = field(default_factory=lambda: np.zeros(0))   # … and the covered time's sum of moments
    _counts: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # closed windows, oldest first
    _covers: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    _mids: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # … and their middles (data time)
    _state: OnsetTracker = field(default_factory=OnsetTracker)

    def __post_init__(self) -> None:
        self.name = self.name or f"climb.{self.metric}"

    def _ensure(self, n: int) -> None:
        self._last, self._last_ts = grow(self._last, n, np.nan), grow(self._last_ts, n, np.nan)
        self._start = grow(self._start, n, np.nan)
        self._count, self._cover = grow(self._count, n, 0.0), grow(self._cover, n, 0.0)
        self._timed = grow(self._timed, n, 0.0)
        if self._counts.shape[1] != self.windows:
            self._counts, self._covers, self._mids = (np.zeros((0, self.windows)) for _ in range(3))
        self._counts, self._covers = grow(self._counts, n, np.nan), grow(self._covers, n, np.nan)
        self._mids = grow(self._mids, n, np.nan)

    def update(self, view: CycleView) -> list[Finding]:
        arr = view.metric(self.metric)
        if arr is None:
            return []
        self._ensure(view.n_slots)
        slots = view.slots
        out: list[Finding] = []
        for j, ts in view.columns():
            v = arr[:, j]
            rise, dt = _placed_increase(self._last, self._last_ts, slots, v, ts, self.max_gap_s)
            self._count[slots] += rise
            self._cover[slots] += dt
            self._timed[slots] += dt * (ts - dt / 2.0)
            seen = _remember(self._last, self._last_ts, slots, v, ts)
            fresh = seen & np.isnan(self._start[slots])
            self._start[slots[fresh]] = ts
            closing = seen & (ts - self._start[slots] >= self.window_s)
            if closing.any():
                rows = np.flatnonzero(closing)
                closed = slots[rows]
                self._counts[closed] = np.column_stack([self._counts[closed, 1:], self._count[closed]])
                self._covers[closed] = np.column_stack([self._covers[closed, 1:], self._cover[closed]])
                with np.errstate(invalid="ignore", divide="ignore"):  # the middle of the time it covered
                    mid = self._timed[closed] / self._cover[closed]
                self._mids[closed] = np.column_stack([self._mids[closed, 1:], mid])
                self._count[closed], self._cover[closed], self._timed[closed] = 0.0, 0.0, 0.0
                self._start[closed] = ts
                counts, covers, mids = self._counts[closed], self._covers[closed], self._mids[closed]
                # an hour of windows, each at least half covered by samples, before anything is judged
                judged = np.all(np.isfinite(counts), axis=1) & np.all(covers >= self.window_s / 2, axis=1)
                facts = self._climbs(counts, covers, mids, judged)
                # windows a gap left unjudged neither report nor end a climb
                for k in self._state.step(closed, np.isfinite(facts["eta_s"]), judged & ~np.isfinite(facts["eta_s"])):
                    row, eta = int(rows[k]), float(facts["eta_s"][k])
                    out.append(Finding(
                        ts=ts, kind=self.kind, severity=Severity.WARNING,
                        score=float(max(0.5, min(1.0, 1.0 - eta / self.horizon_s))), detector=self.name,
                        evidence={"metric": self.metric, "limit": self.limit_label, "limit_per_s": self.limit_per_s,
                                  **{key: round(float(val[k]), 4) for key, val in facts.items()},
                                  "window_s": self.window_s, "windows": self.windows, "persistent": True},
                        predicted_failure_at=ts + eta, **gpu_finding_fields(view, row)))
        return out

    def _climbs(self, counts: FloatArray, covers: FloatArray, mids: FloatArray,
                judged: BoolArray) -> dict[str, FloatArray]:
        """Per row (a GPU's windows, oldest first), the climb's facts where its counts (over exposures `covers`)
        climb steadily towards the limit; `eta_s` is NaN where they do not."""
        n = counts.shape[0]
        facts = {key: np.full(n, np.nan) for key in ("rate_per_s", "growth_per_h", "z", "deviance", "eta_s")}
        with np.errstate(invalid="ignore", divide="ignore"):
            rows = np.flatnonzero(judged & (counts[:, -1] / covers[:, -1] > counts[:, 0] / covers[:, 0]))
        if not rows.size:  # (no fit where a climb ends no faster than it began)
            return facts
        x = (mids[rows] - mids[rows].mean(axis=1, keepdims=True)) / 3600.0  # hours, centred
        a, b, se, deviance = _poisson_trends(x, counts[rows], covers[rows])
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.exp(a + b * x[:, -1])  # per second, at the last window
            eta = np.where(rate >= self.limit_per_s, 0.0, np.log(self.limit_per_s / rate) / b * 3600.0)
            climb = ((b > 0) & (b / se >= self.min_z) & (deviance <= chi2.ppf(self.fit_quantile, counts.shape[1] - 2))
                     & (eta <= self.horizon_s))
        for key, value in (("rate_per_s", rate), ("growth_per_h", np.exp(b)), ("z", b / se),
                           ("deviance", deviance), ("eta_s", eta)):
            facts[key][rows] = np.where(climb, value, np.nan)
        return facts


def _poisson_trends(x: FloatArray, counts: FloatArray, exposure: FloatArray,
                    iterations: int = 25) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per row, the Poisson regression log(rate) = a + b x with exposures, by iteratively reweighted least
    squares (a 2 x 2 system per row): a, b, the standard error of b and the deviance (NaN where it fails)."""
    a = np.log(np.maximum(counts.sum(axis=1) / exposure.sum(axis=1), 1e-12))
    b = np.zeros_like(a)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(iterations):
            eta = a[:, None] + b[:, None] * x
            mu = exposure * np.exp(eta)
            z = eta + (counts - mu) / np.maximum(mu, 1e-300)
            sw, swx, swxx = mu.sum(axis=1), (mu * x).sum(axis=1), (mu * x * x).sum(axis=1)
            swz, swxz = (mu * z).sum(axis=1), (mu * x * z).sum(axis=1)
            det = sw * swxx - swx * swx
            new_a, new_b = (swxx * swz - swx * swxz) / det, (sw * swxz - swx * swz) / det
            done = np.nanmax(np.abs(np.concatenate([new_a - a, new_b - b])), initial=0.0) < 1e-8
            a, b = new_a, new_b
            if done:
                break
        mu = exposure * np.exp(a[:, None] + b[:, None] * x)
        sw, swx, swxx = mu.sum(axis=1), (mu * x).sum(axis=1), (mu * x * x).sum(axis=1)
        se = np.sqrt(sw / (sw * swxx - swx * swx))
        terms = np.where(counts > 0, counts * np.log(counts / mu), 0.0) - (counts - mu)
        deviance = 2.0 * terms.sum(axis=1)
    bad = ~(np.isfinite(a) & np.isfinite(b) & np.isfinite(se) & np.isfinite(deviance))
    return (np.where(bad, np.nan, a), np.where(bad, np.nan, b), np.where(bad, np.nan, se),
            np.where(bad, np.nan, deviance))


def default_anomaly_stages() -> list[Stage]:
    """Baselines on the gauges, CUSUM on the error counters, the multivariate model, peer comparison, job
    saturation."""
    from detectors.multivariate import MultivariateModel
    from detectors.peers import PeerComparison
    from detectors.saturation import JobSaturation

    floors = {m.GPU_TEMP: 3.0, m.MEMORY_TEMP: 3.0, m.POWER_USAGE: 25.0, m.SM_CLOCK: 100.0,
              m.GPU_UTIL: 25.0, m.FB_USED: 2048.0}
    stages: list[Stage] = []
    for metric, kind in m.GAUGE_METRICS.items():
        if metric == m.SM_CLOCK:
            stages.append(LoadConditionedClock(metric, kind, floors[metric]))
        elif metric == m.FB_USED:  # memory that moves with batches and phases has no baseline to leave
            stages.append(RobustBaseline(metric, kind, floors[metric], stable_s=3600.0))
        else:
            stages.append(RobustBaseline(metric, kind, floors[metric]))
    stages += [CounterCusum(metric, kind) for metric, kind in m.COUNTER_RATE_METRICS.items()]
    stages += [CounterBurst(m.ECC_SBE_VOL_TOTAL, FindingKind.ECC)]
    stages += [CounterRateClimb(m.NVLINK_CRC_FLIT_ERRORS, FindingKind.NVLINK, NVLINK_CRC_LIMIT_PER_S, "dcgm_crc_rate"),
               CounterRateClimb(m.PCIE_REPLAY_COUNTER, FindingKind.PCIE, PCIE_REPLAY_LIMIT_PER_S, "dcgm_replay_rate")]
    stages += [MultivariateModel(), PeerComparison(), JobSaturation()]
    return stages
