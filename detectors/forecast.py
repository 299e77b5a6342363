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

A trend is forecast only where the physics lets it reach the limit:
- temperature (needs the power series; off without it): a GPU whose temperature climbs at constant power
  (a rising thermal resistance, see `detectors.thermal`) is forecast and corroborated; one whose temperature
  follows its load is forecast only if it would reach the limit even at its power limit
  (`DCGM_FI_DEV_POWER_MGMT_LIMIT` where exported, else the highest power its model class has drawn), and then
  uncorroborated. A diurnal rise of load never reaches a limit the GPU's physics keeps it under;
- framebuffer: only a climb without drops that progresses through `leak_min_s` (30 min), or through at least
  as long as the forecast reaches ahead (never less than `leak_floor_s`), on a pod that keeps running
  (`MonotoneClimb`), is a leak; memory that moves up and down with batches or phases is not. A new pod on a GPU
  starts the trend and its history again: its allocation is no climb.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FloatArray, GpuLabels
from detectors.peers import group_ids, group_median
from detectors.rules import Stage
from detectors.settling import note_load_steps
from detectors.stream import CycleView, IntArray, OnsetTracker, gpu_finding_fields, grow
from detectors.thermal import ThermalResistance


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
    # What must hold, beyond the trend, for the forecast to be physically possible (module docstring).
    physics: Literal["thermal", "leak"] | None = None

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
    load_before: FloatArray = field(default_factory=lambda: np.zeros(0))       # the level a pause left
    load_before_changed: FloatArray = field(default_factory=lambda: np.zeros(0))
    thermal: ThermalResistance = field(default_factory=ThermalResistance)
    hot: FloatArray = field(default_factory=lambda: np.zeros(0))
    hot_since: FloatArray = field(default_factory=lambda: np.zeros(0))
    nodes: tuple[GpuLabels, IntArray, int] | None = None
    climb: MonotoneClimb = field(default_factory=lambda: MonotoneClimb())
    power_ceiling: dict[str, float] = field(default_factory=dict)
    # per limit and slot: whether this episode's report already stood on its own (see `_stands_alone`)
    firm: list[npt.NDArray[np.bool_]] = field(default_factory=list)


def _stands_alone(f: Finding) -> bool:
    """Whether the incident service opens an incident on this finding alone (`domain.kinds.is_hard`, and
    `persistent` in the evidence): critical or persisting. A forecast is either only when corroborated."""
    return f.severity == Severity.CRITICAL or f.evidence.get("persistent") is True


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
    leak_min_s: float = 1800.0
    leak_floor_s: float = 300.0
    runaway_excess_c: float = 5.0  # beyond inlet drift, the sensor's whole degrees and a node's shared air
    runaway_hold_s: float = 60.0
    name: str = "forecast"
    _states: dict[str, _TargetState] = field(default_factory=dict)

    def update(self, view: CycleView) -> list[Finding]:
        out: list[Finding] = []
        for target in self.targets:
            arr = view.metric(target.metric)
            if arr is None:
                continue
            driver = view.metric(target.steady_on) if target.steady_on else None
            if target.physics == "thermal" and driver is None:
                continue  # without power, a load-driven rise cannot be told from a runaway: off
            state = self._states.setdefault(target.metric, _TargetState())
            self._grow(state, target, view.n_slots, len(target.limits))
            for j, ts in view.columns():
                limits = self._limits(view, target, j, arr.shape[0])
                if driver is not None:
                    # the first sample of a GPU is a load step: nothing says it was not warming up to it
                    seen = np.isfinite(state.load_ref[view.slots]) | ~np.isfinite(driver[:, j])
                    state.load_changed[view.slots[~seen]] = ts
                    # memory does not move with a compute pause (a checkpoint holds it): for a leak, a load that
                    # comes back to where it was is no new load; heat does follow a pause, so not for thermals
                    pause = (state.load_before, state.load_before_changed) if target.physics == "leak" else None
                    note_load_steps(state.load_ref, state.load_changed, view.slots, ts, driver[:, j],
                                    relative=target.steady_jump, absolute=target.steady_jump * target.steady_floor,
                                    pause=pause)
                if target.physics == "thermal" and driver is not None:
                    self._follow_thermals(view, target, state, ts, arr[:, j], driver[:, j])
                elif target.physics == "leak":
                    # a new pod on the GPU is a new load, whatever level it runs at (never a pause that ended)
                    moved = state.climb.update(view, ts, arr[:, j])
                    state.load_changed[moved] = ts
                    state.load_before[moved] = np.nan
                    # and a new series: the jump from the last pod's memory (or an idle GPU's) to this pod's is
                    # its allocation, which a trend carried over would read as a steep climb
                    _forget(state, moved)
                out += self._step(view, target, state, ts, arr[:, j], limits, j)
                if target.physics == "leak":
                    out += self._filled(view, target, state, ts, arr[:, j], limits)
        return out

    def _follow_thermals(self, view: CycleView, target: ForecastTarget, state: _TargetState, ts: float,
                         temp: FloatArray, power: FloatArray) -> None:
        """Learn each GPU's temperature at its power while its load is settled, and mark the GPUs running
        hotter than that by `runaway_excess_c` beyond their node's GPUs (whose inlet air they share)."""
        slots = view.slots
        labels = view.frame.gpus
        if state.nodes is None or state.nodes[0] != labels:
            ids, names = group_ids(list(labels.hostname))
            state.nodes = (labels, ids, len(names))
        _, ids, count = state.nodes
        node_temp, node_power = _node_medians(temp, ids, count), _node_medians(power, ids, count)
        settled = ts - state.load_changed[slots] >= target.settle_s
        state.thermal.update(slots, ts, temp, power, learn=settled, node_temp=node_temp, node_power=node_power)
        _raise_ceiling(state.power_ceiling, view.frame.gpus, state.thermal.sustained_power(slots))
        excess = state.thermal.excess(slots, temp)
        node_excess, _ = group_median(excess, ids, count)
        with np.errstate(invalid="ignore"):
            hot = excess - np.fmax(node_excess[ids], 0.0) >= self.runaway_excess_c
        # held for a minute: the die heats over its time constant, a sensor glitch lasts one sample
        since = np.where(hot, np.fmin(state.hot_since[slots], ts), np.nan)
        state.hot_since[slots] = since
        state.hot[slots] = np.where(hot & (ts - since >= self.runaway_hold_s), 1.0, 0.0)

    def _grow(self, state: _TargetState, target: ForecastTarget, n: int, n_limits: int) -> None:
        # states saved before the load guard existed lack its arrays
        state.load_ref = grow(getattr(state, "load_ref", np.zeros(0)), n, np.nan)
        state.load_changed = grow(getattr(state, "load_changed", np.zeros(0)), n, -np.inf)
        state.load_before = grow(getattr(state, "load_before", np.zeros(0)), n, np.nan)
        state.load_before_changed = grow(getattr(state, "load_before_changed", np.zeros(0)), n, -np.inf)
        for name, make in (("thermal", ThermalResistance), ("climb", MonotoneClimb), ("power_ceiling", dict),
                           ("nodes", lambda: None)):
            if not hasattr(state, name):  # states saved before the physics checks
                setattr(state, name, make())
        if target.physics == "thermal":
            state.thermal.ensure(n)
        if target.physics == "leak":
            state.climb.ensure(n)
        state.hot = grow(getattr(state, "hot", np.zeros(0)), n, 0.0)
        state.hot_since = grow(getattr(state, "hot_since", np.zeros(0)), n, np.nan)
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
        state.firm = [grow(a, n, False) for a in getattr(state, "firm", [])]  # states saved before it lack it
        while len(state.firm) < n_limits:
            state.firm.append(np.zeros(n, dtype=bool))

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
              limits: list[FloatArray], j: int = 0) -> list[Finding]:
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
            settled = (ts - state.load_changed[slots] >= target.settle_s) | (state.hot[slots] > 0)
            candidate = ok & trending & settled & (cnt >= self.min_history) & (eta > 0) & (eta <= self.horizon_s)
            due = np.flatnonzero(candidate & (ts >= state.next_fit[slots]))
            # a GPU hotter than its physics allows needs no t-test on a history its load step may still bend
            due = due[self._significant(state, slots[due]) | (state.hot[slots[due]] > 0)]
            due = due[np.argsort(eta[due], kind="stable")][: self.max_fits_per_step]
            confirmed = np.zeros_like(candidate)
            results: dict[int, tuple[TimeToLimit, dict[str, Any]]] = {}
            for row in due.tolist():
                slot = int(slots[row])
                physics = self._physics(view, target, state, slot, int(row), ts, float(limit[row]), j,
                                        float(eta[row]))
                if physics is None:
                    continue  # cheap to ask again next sample; only the fit below waits for refit_s
                state.next_fit[slot] = ts + self.refit_s
                result = self._confirm(state, slot, float(limit[row]))
                if result is not None and result.expected_s is not None:
                    confirmed[row] = True
                    results[int(row)] = (result, physics)
            tracker, firm = state.trackers[k], state.firm[k]
            clear = ok & ((eta > 2 * self.horizon_s) | ~trending)
            onsets = set(tracker.step(slots, confirmed, clear & ~confirmed).tolist())
            for row in sorted(results):
                slot = int(slots[row])
                if row not in onsets and firm[slot]:
                    continue
                result, physics = results[row]
                finding = self._finding(view, target, lim, ts, row, float(limit[row]), float(lvl[row]),
                                        float(slp[row]), result, physics)
                # one report per episode, and one more if a later fit makes it stand on its own: a runaway that
                # has now persisted, or a crossing now within the hour. The first report, a suspicion that
                # needs repeats, would otherwise be its only one.
                if row in onsets or _stands_alone(finding):
                    firm[slot] = _stands_alone(finding)
                    out.append(finding)
        return out

    def _filled(self, view: CycleView, target: ForecastTarget, state: _TargetState, ts: float, x: FloatArray,
                limits: list[FloatArray]) -> list[Finding]:
        """A leak too fast to forecast: the framebuffer climbed, without a drop and on one pod, under a steady
        load (a tenth to nine tenths of the way over at least half of `leak_floor_s`: a jump is an allocation),
        and reached the limit. A plateau below the limit is an allocation
        done; a climb that ends at the limit is memory run out (the process will fail its next allocation).
        Reported once per climb."""
        climb = state.climb
        filled = getattr(climb, "filled_at", None)
        if filled is None or filled.shape[0] < climb.start_ts.shape[0]:
            climb.filled_at = filled = grow(filled if filled is not None else np.zeros(0), climb.start_ts.shape[0],
                                            np.nan)
        out: list[Finding] = []
        lim, limit = target.limits[0], limits[0]
        with np.errstate(invalid="ignore"):
            full = np.isfinite(x) & (x >= limit)
        for row in np.flatnonzero(full).tolist():
            slot = int(view.slots[row])
            start = float(climb.start_ts[slot])
            forecast = state.trackers[0].active
            if not np.isfinite(start) or filled[slot] == start or (slot < forecast.shape[0] and forecast[slot]):
                continue  # reported already, by this check or by the forecast
            rise = climb.rise(slot, ts, start)
            if rise is None:
                continue
            risen, rise_began, rise_s = rise
            if risen < max(climb.min_drop, 0.1 * float(limit[row])) or rise_s < self.leak_floor_s / 2:
                continue  # too small, or a jump (an allocation) rather than a climb
            if float(state.load_changed[slot]) > rise_began - target.settle_s:
                continue  # the load stepped during or just before the rise: a job filling up as it starts
            filled[slot] = start
            evidence = {"metric": target.metric, "limit": lim.label, "limit_value": float(limit[row]),
                        "level": float(x[row]), "climbed_mib": round(risen, 1), "monotone_climb_s": ts - start,
                        "corroborated": True, "signals": ["framebuffer_climbed_to_limit", "load_steady"]}
            out.append(Finding(ts=ts, kind=target.kind, severity=Severity.CRITICAL, score=1.0,
                               detector=f"{target.name}.{lim.label}", evidence=evidence, predicted_failure_at=ts,
                               **gpu_finding_fields(view, row)))
        return out

    def _physics(self, view: CycleView, target: ForecastTarget, state: _TargetState, slot: int, row: int,
                 ts: float, limit: float, j: int, eta_s: float = np.inf) -> dict[str, Any] | None:
        """The evidence that the limit is physically within reach, or None when it is not (no forecast)."""
        if target.physics == "thermal":
            settled = float(state.load_changed[slot]) + target.settle_s
            slope = state.thermal.runaway_slope(slot, settled)
            physics: dict[str, Any] = {"hotter_than_learnt_at_this_power": bool(state.hot[slot] > 0),
                                       "thermal_resistance_c_per_w": state.thermal.resistance(slot)}
            if slope is not None:
                physics |= {"runaway_slope_c_per_h": round(slope.per_h, 3), "runaway_t": round(slope.t_stat, 2),
                            "runaway_rise_c": round(slope.rise_c, 2)}
            climbing = False
            if state.hot[slot] > 0:  # hotter than its physics allows, and still climbing since it became so
                per_h, t_stat, n = state.thermal.climb_since(slot, float(state.hot_since[slot]))
                climbing = n >= 4 and per_h >= target.min_slope_per_h and t_stat >= 2.0
            runaway = state.thermal.rising(slot, target.min_slope_per_h, self.min_t, settled)
            signals = [name for name, agrees in (
                ("temp_above_own_at_equal_power", climbing),
                ("temp_rising_at_constant_power", runaway)) if agrees]
            if signals:
                # a runaway was watched climbing through the whole settled history (half an hour at least, still
                # climbing over its later half) before this single report (one per episode): it has persisted
                # already, and the incident service needs no repeats of it
                return {**physics, "corroborated": True, **({"persistent": True} if runaway else {}),
                        "signals": signals}
            power_limit = _power_limit(view, state, row, j)
            reach = state.thermal.reachable(slot, power_limit)
            if reach is None or reach < limit:
                return None  # the rise follows the load, and even full power keeps it under the limit
            return {**physics, "load_driven": True, "reachable_c": round(reach, 1), "power_limit_w": power_limit,
                    "corroborated": False, "signals": []}
        if target.physics == "leak":
            # watched for `leak_min_s`, or at least as long as the forecast reaches ahead (never extrapolate
            # further than the climb has been seen): a leak that fills the memory in 20 min is not waited on
            span = min(self.leak_min_s, max(eta_s, self.leak_floor_s))
            climbed_s = state.climb.climbing_s(slot, ts, span)
            if climbed_s < span:
                return None
            # a climb under a steady load (a candidate is one whose load has not stepped for settle_s), on one
            # pod the whole time: the workload is not doing more, yet holds more. The climb was watched for the
            # whole span before this single report (one per episode), so it has persisted already: the incident
            # service needs no repeats of it.
            return {"monotone_climb_s": climbed_s, "corroborated": True, "persistent": True,
                    "signals": ["framebuffer_monotone_without_drops", "load_steady"]}
        return {}

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
                 level: float, slope: float, result: TimeToLimit, physics: dict[str, Any] | None = None) -> Finding:
        assert result.expected_s is not None
        physics = physics or {}
        soon = result.expected_s <= self.critical_s and physics.get("corroborated", True)
        severity = Severity.CRITICAL if soon else Severity.WARNING
        evidence: dict[str, Any] = {
            "metric": target.metric, "limit": lim.label, "limit_value": limit, "level": level,
            "slope_per_h": slope * 3600.0, "eta_s": result.expected_s, "eta_earliest_s": result.earliest_s,
            "eta_latest_s": result.latest_s, "interval": 0.9, "method": "statsmodels ExponentialSmoothing",
            **physics,
        }
        return Finding(ts=ts, kind=target.kind, severity=severity,
                       score=float(max(0.0, min(1.0, 1.0 - result.expected_s / self.horizon_s))),
                       detector=f"{target.name}.{lim.label}", evidence=evidence,
                       predicted_failure_at=ts + result.expected_s, **gpu_finding_fields(view, row))


def _forget(state: _TargetState, slots: IntArray) -> None:
    """Start the trend and the history of `slots` again from their next sample."""
    if slots.size:
        state.level[slots], state.slope[slots], state.last_ts[slots] = np.nan, 0.0, np.nan
        state.count[slots] = 0.0
        state.history[slots], state.history_ts[slots] = np.nan, np.nan


def _node_medians(values: FloatArray, ids: IntArray, count: int, min_gpus: int = 3) -> FloatArray:
    """Each row's node median, NaN where the node has fewer than `min_gpus` values."""
    med, n = group_median(values, ids, count)
    return np.where(n[ids] >= min_gpus, med[ids], np.nan)


def _power_limit(view: CycleView, state: _TargetState, row: int, j: int) -> float:
    """The GPU's power limit: the exported enforced limit, else the most its model class has drawn so far
    (sustained over a thermal time constant: a momentary spike heats nothing)."""
    limit = view.metric(m.POWER_MGMT_LIMIT)
    if limit is not None and np.isfinite(limit[row, j]):
        return float(limit[row, j])
    return state.power_ceiling.get(view.frame.gpus.model_name[row], float("nan"))


def _raise_ceiling(ceiling: dict[str, float], labels: GpuLabels, power: FloatArray) -> None:
    """The highest power drawn so far per model class."""
    names = labels.model_name
    if len(set(names)) == 1:
        if np.isfinite(power).any():
            ceiling[names[0]] = max(ceiling.get(names[0], 0.0), float(np.nanmax(power)))
        return
    for name in set(names):
        rows = np.fromiter((n == name for n in names), dtype=bool, count=len(names))
        if np.isfinite(power[rows]).any():
            ceiling[name] = max(ceiling.get(name, 0.0), float(np.nanmax(power[rows])))


@dataclass
class MonotoneClimb:
    """Per slot, how long a series has climbed without a drop, on the same pod: the shape of a leak.

    A drop is a sample more than `tolerance` (max of `min_drop` and `drop_share` of the peak) below the
    climb's peak; a drop, a pod change or a GPU without a pod starts the count again. A climb must also
    progress: the series is kept once a minute (`sample_s`, `keep` entries: 40 minutes), and over the span asked for it
    must rise by at least `tolerance`, each third by at least a quarter of that rise. A flat series with noise
    never climbs, and a step up followed by a plateau is an allocation, not a leak.
    """

    min_drop: float = 256.0
    drop_share: float = 0.005
    sample_s: float = 60.0
    keep: int = 40
    start_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    peak: FloatArray = field(default_factory=lambda: np.zeros(0))
    kept_ts: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    kept: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    count: FloatArray = field(default_factory=lambda: np.zeros(0))
    pods: dict[int, str] = field(default_factory=dict)
    filled_at: FloatArray | None = None  # per slot, the start of the climb last reported as having filled up

    def ensure(self, n: int) -> None:
        self.start_ts = grow(self.start_ts, n, np.nan)
        self.peak = grow(self.peak, n, np.nan)
        self.count = grow(self.count, n, 0.0)
        self.kept_ts = grow(self.kept_ts if self.kept_ts.size else np.zeros((0, self.keep)), n, np.nan)
        self.kept = grow(self.kept if self.kept.size else np.zeros((0, self.keep), dtype=np.float32), n, np.nan)

    def update(self, view: CycleView, ts: float, x: FloatArray) -> IntArray:
        """Follow the new sample; return the slots whose pod changed (or that have none)."""
        slots = view.slots
        pods = view.frame.gpus.pod
        moved = np.fromiter((self.pods.get(int(s)) != p or not p for s, p in zip(slots, pods, strict=True)),
                            dtype=bool, count=slots.shape[0])
        changed_pod = np.fromiter((self.pods.get(int(s)) != p for s, p in zip(slots, pods, strict=True)),
                                  dtype=bool, count=slots.shape[0])
        for s, p in zip(slots[moved].tolist(), np.asarray(pods, dtype=object)[moved].tolist(), strict=True):
            self.pods[s] = p
        ok = np.isfinite(x)
        peak = self.peak[slots]
        tolerance = np.maximum(self.min_drop, self.drop_share * np.nan_to_num(peak))
        with np.errstate(invalid="ignore"):
            restart = ok & (moved | ~np.isfinite(peak) | (x < peak - tolerance))
        keep = ok & ~restart
        self.start_ts[slots[restart]] = ts
        self.peak[slots[restart]] = x[restart]
        self.peak[slots[keep]] = np.maximum(peak[keep], x[keep])
        s, v = slots[ok], x[ok]
        last = (self.count[s] - 1).astype(np.int64) % self.keep
        last_ts = np.where(self.count[s] > 0, self.kept_ts[s, last], -np.inf)
        due = ts - last_ts >= self.sample_s
        s, v = s[due], v[due]
        pos = (self.count[s] % self.keep).astype(np.int64)
        self.kept_ts[s, pos] = ts
        self.kept[s, pos] = v.astype(np.float32)
        self.count[s] += 1
        return np.asarray(slots[changed_pod])

    def rise(self, slot: int, ts: float, since: float) -> tuple[float, float, float] | None:
        """How far the series rose since `since` (from its first kept sample then to its peak), when the rise
        began (the first kept sample a tenth of the way up) and how long it took from a tenth to nine tenths of
        the way; None when too little was kept."""
        kept_ts, kept = self.kept_ts[slot], self.kept[slot].astype(np.float64)
        ok = np.isfinite(kept_ts) & np.isfinite(kept) & (kept_ts >= since) & (kept_ts <= ts)
        if ok.sum() < 2:
            return None
        order = np.argsort(kept_ts[ok])
        times, values = kept_ts[ok][order], kept[ok][order]
        risen = float(values.max()) - float(values[0])
        if risen <= 0:
            return 0.0, ts, 0.0
        began = float(times[np.flatnonzero(values >= values[0] + 0.1 * risen)[0]])
        reached = float(times[np.flatnonzero(values >= values[0] + 0.9 * risen)[0]])
        return risen, began, reached - began

    def climbing_s(self, slot: int, ts: float, span_s: float) -> float:
        """Seconds the current climb has lasted, or 0 unless it has lasted `span_s` and progressed over it."""
        start = float(self.start_ts[slot])
        if not np.isfinite(start) or ts - start < span_s:
            return 0.0
        kept = np.column_stack([self.kept_ts[slot], self.kept[slot].astype(np.float64)])
        kept = kept[np.isfinite(kept).all(axis=1) & (kept[:, 0] >= ts - span_s)]
        kept = kept[np.argsort(kept[:, 0])]
        if kept.shape[0] < 4:
            return 0.0
        marks = kept[np.linspace(0, kept.shape[0] - 1, 4).round().astype(int), 1]
        tolerance = max(self.min_drop, self.drop_share * float(self.peak[slot]))
        rise = marks[-1] - marks[0]
        if rise < tolerance or np.any(np.diff(marks) < rise / 4):
            return 0.0
        return float(ts - start)


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
                       steady_on=m.POWER_USAGE, steady_floor=50.0, physics="thermal"),
        ForecastTarget(m.FB_USED, FindingKind.MEMORY_LEAK,
                       (Limit(lim.framebuffer_full, "full", relative_to=m.FB_FREE),), min_slope_per_h=256.0,
                       steady_on=m.GPU_UTIL, steady_floor=10.0, settle_s=600.0, physics="leak"),
        ForecastTarget(m.UNCORRECTABLE_REMAPPED_ROWS, FindingKind.ROW_REMAP, (Limit(lim.remapped_rows, "spare_rows"),),
                       min_slope_per_h=0.5),
        ForecastTarget(m.ECC_SBE_VOL_TOTAL, FindingKind.ECC, (Limit(lim.sbe_total, "sbe_total"),),
                       min_slope_per_h=50.0),
    )


def default_forecast_stages() -> list[Stage]:
    return [FailureForecast(default_targets())]
