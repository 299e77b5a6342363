"""Failure forecasts: when will a GPU cross a limit, with a prediction interval.

Two layers keep this affordable for a whole fleet each cycle:
1. screening, vectorised over every GPU: a Holt linear trend (level and slope per second, irregular
   steps) per series, projected to the limit; only a GPU projected to cross within `horizon_s` with a
   clear trend goes on to
2. statsmodels' state-space exponential smoothing (additive trend) fitted on that GPU's recent history
   (kept in a ring buffer), whose forecast and 90 % prediction interval give the time to the limit
   (expected, earliest, latest). It runs at most once per `refit_s` of data time per GPU and target,
   and for at most `max_fits_per_step` GPUs per sample (the soonest projected crossings first).

Targets: temperature (throttle and shutdown limits), framebuffer (full: used + free), uncorrectable
remapped rows (the part's spare-row budget) and single-bit ECC growth.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FloatArray
from detectors.rules import Stage
from detectors.settling import note_load_steps
from detectors.stream import CycleView, IntArray, OnsetTracker, gpu_finding_fields, grow


@dataclass(frozen=True)
class Limit:
    """A limit on a metric: a fixed value, or (when `relative_to` is set) a fraction of metric + other."""

    value: float
    label: str
    relative_to: str | None = None


@dataclass(frozen=True)
class TimeToLimit:
    """The forecast crossing of a limit, in seconds from now (None: not within the horizon)."""

    expected_s: float | None
    earliest_s: float | None
    latest_s: float | None
    forecast: float  # the forecast value at the horizon


# (level, trend) smoothing pairs; the best by likelihood is kept: a few Kalman-filter passes instead of a
# numerical optimisation, ~100x cheaper and stable on short series.
_SMOOTHING_GRID: tuple[tuple[float, float], ...] = tuple(
    (a, b) for a in (0.1, 0.3, 0.6, 0.9) for b in (0.01, 0.05, 0.2) if b <= a)


def time_to_limit(history: FloatArray, step_s: float, limit: float, horizon_s: float,
                  alpha: float = 0.1) -> TimeToLimit:
    """Fit exponential smoothing with an additive trend and read when it crosses `limit` (upwards).

    `earliest_s` is when the upper bound of the (1 - alpha) prediction interval crosses, `latest_s`
    when the lower bound does.
    """
    y = np.asarray(history, dtype=np.float64)
    if y.ndim != 1 or y.size < 10 or not np.all(np.isfinite(y)):
        raise ValueError("time_to_limit needs at least 10 finite samples")
    from statsmodels.tsa.statespace.exponential_smoothing import ExponentialSmoothing  # slow import

    steps = max(1, int(np.ceil(horizon_s / step_s)))
    with warnings.catch_warnings():
        # statsmodels' numerical chatter on flat series is not an error
        warnings.simplefilter("ignore")
        model = ExponentialSmoothing(y, trend=True, initialization_method="known", initial_level=float(y[0]),
                                     initial_trend=float(np.mean(np.diff(y[: min(10, y.size)]))))
        params = max(_SMOOTHING_GRID, key=lambda p: float(model.loglike(list(p))))
        forecast = model.smooth(list(params)).get_forecast(steps)
        mean = np.asarray(forecast.predicted_mean, dtype=np.float64)
        bounds = np.asarray(forecast.conf_int(alpha=alpha), dtype=np.float64)

    def first(series: FloatArray) -> float | None:
        hit = np.flatnonzero(series >= limit)
        return float((hit[0] + 1) * step_s) if hit.size else None

    return TimeToLimit(first(mean), first(bounds[:, 1]), first(bounds[:, 0]), float(mean[-1]))


@dataclass
class ForecastTarget:
    """One forecast: a metric, its limits (each reported once per episode), and the finding kind."""

    metric: str
    kind: FindingKind
    limits: tuple[Limit, ...]
    min_slope_per_h: float  # slopes below this are noise, never forecast
    name: str = ""
    # The load that drives the metric (power for temperature, activity for framebuffer): for `settle_s` after
    # it jumps by more than `steady_jump` of its recent level (a job starting, moving, stopping) the metric is
    # settling to a new level, not trending to failure, and is not forecast. A failing cooler or a leaking
    # process climbs under a steady load.
    steady_on: str | None = None
    steady_jump: float = 0.25
    steady_floor: float = 10.0
    settle_s: float = 1200.0

    def __post_init__(self) -> None:
        self.name = self.name or f"forecast.{self.metric}"


@dataclass
class _TargetState:
    level: FloatArray = field(default_factory=lambda: np.zeros(0))
    slope: FloatArray = field(default_factory=lambda: np.zeros(0))
    last_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    count: FloatArray = field(default_factory=lambda: np.zeros(0))
    next_fit: FloatArray = field(default_factory=lambda: np.zeros(0))
    history: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    history_ts: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    trackers: list[OnsetTracker] = field(default_factory=list)
    load_ref: FloatArray = field(default_factory=lambda: np.zeros(0))
    load_changed: FloatArray = field(default_factory=lambda: np.zeros(0))


@dataclass
class FailureForecast:
    """Screens every GPU each sample, confirms candidates with statsmodels (see the module docstring)."""

    targets: tuple[ForecastTarget, ...]
    horizon_s: float = 6 * 3600.0
    critical_s: float = 3600.0
    alpha: float = 0.2
    beta: float = 0.03
    max_fits_per_step: int = 16
    min_t: float = 6.0
    history: int = 60
    min_history: int = 20
    refit_s: float = 600.0
    name: str = "forecast"
    _states: dict[str, _TargetState] = field(default_factory=dict)

    def update(self, view: CycleView) -> list[Finding]:
        out: list[Finding] = []
        for target in self.targets:
            arr = view.metric(target.metric)
            if arr is None:
                continue
            state = self._states.setdefault(target.metric, _TargetState())
            self._grow(state, view.n_slots, len(target.limits))
            driver = view.metric(target.steady_on) if target.steady_on else None
            for j, ts in view.columns():
                limits = self._limits(view, target, j, arr.shape[0])
                if driver is not None:
                    note_load_steps(state.load_ref, state.load_changed, view.slots, ts, driver[:, j],
                                    relative=target.steady_jump, absolute=target.steady_jump * target.steady_floor)
                out += self._step(view, target, state, ts, arr[:, j], limits)
        return out

    def _grow(self, state: _TargetState, n: int, n_limits: int) -> None:
        # states saved before the load guard existed lack its arrays
        state.load_ref = grow(getattr(state, "load_ref", np.zeros(0)), n, np.nan)
        state.load_changed = grow(getattr(state, "load_changed", np.zeros(0)), n, -np.inf)
        state.level = grow(state.level, n, np.nan)
        state.slope = grow(state.slope, n, 0.0)
        state.last_ts = grow(state.last_ts, n, np.nan)
        state.count = grow(state.count, n, 0.0)
        state.next_fit = grow(state.next_fit, n, -np.inf)
        state.history = grow(state.history if state.history.size else np.zeros((0, self.history)), n, np.nan)
        state.history_ts = grow(state.history_ts if state.history_ts.size else np.zeros((0, self.history)),
                                n, np.nan)
        while len(state.trackers) < n_limits:
            state.trackers.append(OnsetTracker())

    @staticmethod
    def _limits(view: CycleView, target: ForecastTarget, j: int, rows: int) -> list[FloatArray]:
        out = []
        for lim in target.limits:
            if lim.relative_to is None:
                out.append(np.full(rows, lim.value))
                continue
            own, other = view.metric(target.metric), view.metric(lim.relative_to)
            assert own is not None
            total = own[:, j] + (other[:, j] if other is not None else np.nan)
            out.append(lim.value * total)
        return out

    def _step(self, view: CycleView, target: ForecastTarget, state: _TargetState, ts: float, x: FloatArray,
              limits: list[FloatArray]) -> list[Finding]:
        slots = view.slots
        ok = np.isfinite(x)
        s, v = slots[ok], x[ok]
        level, slope, last = state.level[s], state.slope[s], state.last_ts[s]
        first = ~np.isfinite(level)
        dt = np.where(first, 1.0, np.maximum(ts - last, 1e-9))
        predicted = level + slope * dt
        new_level = np.where(first, v, self.alpha * v + (1 - self.alpha) * predicted)
        new_slope = np.where(first, 0.0, self.beta * (new_level - level) / dt + (1 - self.beta) * slope)
        state.level[s], state.slope[s], state.last_ts[s] = new_level, new_slope, ts
        state.count[s] += 1
        pos = (state.count[s] - 1).astype(np.int64) % self.history
        state.history[s, pos] = v
        state.history_ts[s, pos] = ts

        out: list[Finding] = []
        lvl, slp, cnt = state.level[slots], state.slope[slots], state.count[slots]
        for k, (lim, limit) in enumerate(zip(target.limits, limits, strict=True)):
            with np.errstate(invalid="ignore", divide="ignore"):
                eta = np.where(slp > 0, (limit - lvl) / slp, np.inf)
            trending = slp * 3600.0 >= target.min_slope_per_h
            settled = ts - state.load_changed[slots] >= target.settle_s
            candidate = ok & trending & settled & (cnt >= self.min_history) & (eta > 0) & (eta <= self.horizon_s)
            due = np.flatnonzero(candidate & (ts >= state.next_fit[slots]))
            due = due[self._significant(state, slots[due])]
            due = due[np.argsort(eta[due], kind="stable")][: self.max_fits_per_step]
            confirmed = np.zeros_like(candidate)
            results: dict[int, TimeToLimit] = {}
            for row in due.tolist():
                slot = int(slots[row])
                state.next_fit[slot] = ts + self.refit_s
                result = self._confirm(state, slot, float(limit[row]))
                if result is not None and result.expected_s is not None:
                    confirmed[row] = True
                    results[int(row)] = result
            tracker = state.trackers[k]
            clear = ok & ((eta > 2 * self.horizon_s) | ~trending)
            for row in tracker.step(slots, confirmed, clear & ~confirmed):
                out.append(self._finding(view, target, lim, ts, int(row), float(limit[row]), float(lvl[row]),
                                         float(slp[row]), results[int(row)]))
        return out

    def _significant(self, state: _TargetState, slots: IntArray) -> npt.NDArray[np.bool_]:
        """Rising trend whose least-squares slope over the history is `min_t` standard errors above 0."""
        t, y = state.history_ts[slots], state.history[slots]
        ok = np.isfinite(t) & np.isfinite(y)
        n = ok.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tc = np.where(ok, t - np.nanmean(np.where(ok, t, np.nan), axis=1, keepdims=True), 0.0)
            yc = np.where(ok, y - np.nanmean(np.where(ok, y, np.nan), axis=1, keepdims=True), 0.0)
            sxx = (tc * tc).sum(axis=1)
            slope = (tc * yc).sum(axis=1) / sxx
            resid = np.where(ok, yc - slope[:, None] * tc, 0.0)
            se = np.sqrt((resid * resid).sum(axis=1) / np.maximum(n - 2, 1) / sxx)
            tstat = slope / np.maximum(se, 1e-12)
        return np.asarray((n >= self.min_history) & (tstat >= self.min_t))

    def _confirm(self, state: _TargetState, slot: int, limit: float) -> TimeToLimit | None:
        order = np.argsort(state.history_ts[slot])
        t = state.history_ts[slot][order]
        y = state.history[slot][order]
        keep = np.isfinite(t) & np.isfinite(y)
        t, y = t[keep], y[keep]
        if y.size < self.min_history or not np.isfinite(limit):
            return None
        if _saturating(t, y):
            return None
        step = float(np.median(np.diff(t)))
        return time_to_limit(y, step, limit, self.horizon_s)

    def _finding(self, view: CycleView, target: ForecastTarget, lim: Limit, ts: float, row: int, limit: float,
                 level: float, slope: float, result: TimeToLimit) -> Finding:
        assert result.expected_s is not None
        severity = Severity.CRITICAL if result.expected_s <= self.critical_s else Severity.WARNING
        evidence: dict[str, Any] = {
            "metric": target.metric, "limit": lim.label, "limit_value": limit, "level": level,
            "slope_per_h": slope * 3600.0, "eta_s": result.expected_s, "eta_earliest_s": result.earliest_s,
            "eta_latest_s": result.latest_s, "interval": 0.9, "method": "statsmodels ExponentialSmoothing",
        }
        return Finding(ts=ts, kind=target.kind, severity=severity,
                       score=float(max(0.0, min(1.0, 1.0 - result.expected_s / self.horizon_s))),
                       detector=f"{target.name}.{lim.label}", evidence=evidence,
                       predicted_failure_at=ts + result.expected_s, **gpu_finding_fields(view, row))


def _saturating(t: FloatArray, y: FloatArray, ratio: float = 0.5) -> bool:
    """True when the rise is levelling off: the later half's slope is under `ratio` of the earlier half's.

    A GPU warming up after its load rose follows a saturating curve (thermal inertia), and a linear or Holt
    trend fitted to it points at the limit; a cooling failure keeps climbing. Only the second is a forecast.
    """
    half = y.size // 2
    if half < 4:
        return False
    early = np.polyfit(t[:half] - t[0], y[:half], 1)[0]
    late = np.polyfit(t[half:] - t[0], y[half:], 1)[0]
    return bool(early > 0 and late < ratio * early)


@dataclass(frozen=True)
class ForecastLimits:
    """Limits of the default forecasts. Set `remapped_rows` to the part's spare-row budget."""

    temp_throttle_c: float = 87.0
    temp_shutdown_c: float = 92.0
    framebuffer_full: float = 0.98
    remapped_rows: float = 512.0
    sbe_total: float = 10_000.0


def default_targets(lim: ForecastLimits | None = None) -> tuple[ForecastTarget, ...]:
    lim = lim or ForecastLimits()
    return (
        ForecastTarget(m.GPU_TEMP, FindingKind.THERMAL, (Limit(lim.temp_throttle_c, "throttle"),
                                               Limit(lim.temp_shutdown_c, "shutdown")), min_slope_per_h=2.0,
                       steady_on=m.POWER_USAGE, steady_floor=50.0),
        ForecastTarget(m.FB_USED, FindingKind.MEMORY_LEAK,
                       (Limit(lim.framebuffer_full, "full", relative_to=m.FB_FREE),), min_slope_per_h=256.0,
                       steady_on=m.GPU_UTIL, steady_floor=10.0, settle_s=600.0),
        ForecastTarget(m.UNCORRECTABLE_REMAPPED_ROWS, FindingKind.ROW_REMAP, (Limit(lim.remapped_rows, "spare_rows"),),
                       min_slope_per_h=0.5),
        ForecastTarget(m.ECC_SBE_VOL_TOTAL, FindingKind.ECC, (Limit(lim.sbe_total, "sbe_total"),),
                       min_slope_per_h=50.0),
    )


def default_forecast_stages() -> list[Stage]:
    return [FailureForecast(default_targets())]
