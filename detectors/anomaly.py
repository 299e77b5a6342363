"""Streaming anomaly models, vectorised over every GPU of the frame:

- `RobustBaseline`: per series, a Huber-clipped exponentially weighted mean and mean absolute deviation
  (a robust baseline that one outlier cannot drag), with an optional daily profile for seasonal series;
- `CounterCusum`: one-sided CUSUM on the rate of error counters (SBE ECC, NVLink CRC, PCIe replays),
  standardised against the counter's own quiet-time rate;
- `MultivariateModel`: an IsolationForest per GPU model class on standardised metric vectors, refitted
  on a reservoir of past samples at fixed data-time intervals (never on the sample it scores);
- `PeerComparison` (in `detectors.peers`): a GPU against the other GPUs of its job and of its node.

Each keeps per-slot state between cycles and costs only the new samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FloatArray
from detectors.rules import Stage
from detectors.stream import CycleView, IntArray, OnsetTracker, gpu_finding_fields, grow


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
    """A gauge far from its own robust baseline for `persist` samples in a row.

    z = |x - mean| / (1.25 * mean absolute deviation), with a floor on the deviation (`min_dev`, in the
    metric's units) so a perfectly flat series does not alarm on noise. With `season_s`, the baseline runs
    on the residual from the mean of the sample's phase bin (e.g. its hour of day), scored once that bin
    has three samples: the daily shape is learnt instead of widening the deviation.
    """

    metric: str
    kind: FindingKind
    min_dev: float
    alpha: float = 0.02
    z_on: float = 8.0
    z_off: float = 4.0
    persist: int = 3
    warmup: int = 30
    season_s: float | None = None
    season_bins: int = 24
    name: str = ""
    _ewm: _Ewm = field(default_factory=lambda: _Ewm(0.02, 3.0))
    _season: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    _season_n: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    _run: FloatArray = field(default_factory=lambda: np.zeros(0))
    _state: OnsetTracker = field(default_factory=OnsetTracker)

    def __post_init__(self) -> None:
        self._ewm.alpha = self.alpha
        self.name = self.name or f"baseline.{self.metric}"
        self._season = np.zeros((0, self.season_bins))
        self._season_n = np.zeros((0, self.season_bins))

    def update(self, view: CycleView) -> list[Finding]:
        arr = view.metric(self.metric)
        if arr is None:
            return []
        self._ewm.ensure(view.n_slots)
        self._run = grow(self._run, view.n_slots, 0.0)
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
                z = np.abs(x - base) / dev
            ready = (self._ewm.count[slots] >= self.warmup) & np.isfinite(z)
            high = ready & (z >= self.z_on)
            run = np.where(high, self._run[slots] + 1, 0.0)
            self._run[slots] = run
            on = run >= self.persist
            off = ~np.isfinite(z) | (z < self.z_off)
            for row in self._state.step(slots, on, off & ~on):
                out.append(Finding(
                    ts=ts, kind=self.kind, severity=Severity.WARNING,
                    score=float(min(1.0, z[row] / (2 * self.z_on))), detector=self.name,
                    evidence={"metric": self.metric, "value": float(raw[row]),
                              "baseline": float(base[row] + offset[row]),
                              "deviation": float(dev[row]), "z": float(z[row]), "samples": self.persist},
                    **gpu_finding_fields(view, int(row))))
            if self.season_s is not None:
                ok = np.isfinite(raw)
                s = slots[ok]
                n = self._season_n[s, phase]
                self._season[s, phase] += (raw[ok] - self._season[s, phase]) / np.minimum(n + 1.0, 10.0)
                self._season_n[s, phase] = n + 1.0
            self._ewm.update(slots, x)
        return out


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
    alpha: float = 0.01
    k: float = 0.5
    h: float = 10.0
    warmup: int = 20
    name: str = ""
    _last: FloatArray = field(default_factory=lambda: np.zeros(0))
    _last_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    _ref: _Ewm = field(default_factory=lambda: _Ewm(0.01, 3.0))
    _s: FloatArray = field(default_factory=lambda: np.zeros(0))
    _state: OnsetTracker = field(default_factory=OnsetTracker)

    def __post_init__(self) -> None:
        self._ref.alpha = self.alpha
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
            ready = ok & (self._ref.count[slots] >= self.warmup)
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
            seen = np.isfinite(v)
            self._last[slots[seen]] = v[seen]
            self._last_ts[slots[seen]] = ts
        return out


def default_anomaly_stages() -> list[Stage]:
    """Baselines on the gauges, CUSUM on the error counters, the multivariate model, peer comparison, job
    saturation."""
    from detectors.multivariate import MultivariateModel
    from detectors.peers import PeerComparison
    from detectors.saturation import JobSaturation

    floors = {m.GPU_TEMP: 3.0, m.MEMORY_TEMP: 3.0, m.POWER_USAGE: 25.0, m.SM_CLOCK: 100.0,
              m.GPU_UTIL: 25.0, m.FB_USED: 2048.0}
    stages: list[Stage] = [RobustBaseline(metric, kind, floors[metric])
                           for metric, kind in m.GAUGE_METRICS.items()]
    stages += [CounterCusum(metric, kind) for metric, kind in m.COUNTER_RATE_METRICS.items()]
    stages += [MultivariateModel(), PeerComparison(), JobSaturation()]
    return stages
