"""A GPU's thermal physics as the detectors use it: temperature ≈ inlet + R_th × power.

`ThermalResistance` follows, per GPU slot, how temperature answers power: the power is smoothed over a
minute (`smooth_s`: sample noise and spikes out, still ahead of the die's own time constant), and the
incremental thermal resistance R comes from a long exponentially weighted regression of temperature on that
power, so a diurnal swing of load is learnt rather than forecast. It keeps a short
history of (time, temperature, smoothed power). From these it says
- whether the thermal resistance is rising (`runaway_slope`): the temperature with the power's share taken
  out, T − R_c × P, climbing. Only that (a failing fan or cold plate, a clogged filter) carries a GPU to its
  slowdown temperature without more load. While the power rises R_c is the upper bound T / P (the inlet is
  above 0 °C), so no rise that the load could explain counts; while it falls or holds, R_c = 0;
- how hot the GPU can get at full power (`reachable`): T + R × (P_limit − P). A GPU whose temperature rises
  with its load but stays under a limit even at its power limit cannot reach it.

The GPUs of a node share their inlet air: the caller may hand each sample's node median temperature and power,
and the runaway test then runs on the GPU's difference from its node, so a warmer room (a rack's cooling, the
day's swing) that lifts every GPU of a node is not one GPU's runaway.

Inlet drift also moves T − R_c × P: about a degree over an hour, and dcgm-exporter reports whole degrees. So
the history is long (40 minutes, a sample kept per half minute) and a runaway must have climbed by at least
`min_rise_c` over it, beyond what drift and the sensor's resolution make, and must still be climbing over its
later half (a GPU warming up to a new load, or from a cold start, levels off; a runaway does not). No single
sample may carry half the rise: a die warms over its time constant, so a jump is a step (or a glitch) that
then holds, not a climb. The caller names when the load last settled: only samples after it count, and they
must span `min_span_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors.frame import FloatArray
from detectors.stream import IntArray, grow

MIN_POWER_SPREAD_W = 15.0  # the power must have moved this much (EW standard deviation) for R to be learnt


@dataclass(frozen=True)
class RunawaySlope:
    """Slope of T − R_c × P over the history (°C per hour), its t statistic, and the rise it makes over the
    history's span (°C)."""

    per_h: float
    t_stat: float
    rise_c: float
    resistance_c_per_w: float | None
    recent_per_h: float = 0.0
    recent_t_stat: float = 0.0
    largest_jump_c: float = 0.0


@dataclass
class ThermalResistance:
    """Per-slot R_th estimate and a ring buffer of (t, T, P); see the module docstring."""

    history: int = 80
    keep_every_s: float = 30.0    # the history keeps a sample per half minute (80: 40 minutes), in float32
    min_rise_c: float = 3.0
    min_span_s: float = 1800.0
    half_life_s: float = 4 * 3600.0  # R is learnt over hours of data time, across the day's swings of load
    smooth_s: float = 60.0        # power noise smoothed out, still ahead of the die's own time constant
    sustained_s: float = 300.0    # what counts as drawn for a while (a spike heats nothing)
    _power: FloatArray = field(default_factory=lambda: np.zeros(0))
    _sustained: FloatArray = field(default_factory=lambda: np.zeros(0))
    _last_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    _mean_p: FloatArray = field(default_factory=lambda: np.zeros(0))
    _mean_t: FloatArray = field(default_factory=lambda: np.zeros(0))
    _var_p: FloatArray = field(default_factory=lambda: np.zeros(0))
    _cov: FloatArray = field(default_factory=lambda: np.zeros(0))
    _count: FloatArray = field(default_factory=lambda: np.zeros(0))
    _seen: FloatArray = field(default_factory=lambda: np.zeros(0))
    _kept_ts: FloatArray = field(default_factory=lambda: np.zeros(0))
    _times: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    _ring: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0, 4), dtype=np.float32))

    def ensure(self, n: int) -> None:
        for name, fill in (("_power", np.nan), ("_sustained", np.nan), ("_last_ts", np.nan), ("_mean_p", np.nan),
                           ("_mean_t", np.nan), ("_var_p", 0.0), ("_cov", 0.0), ("_count", 0.0), ("_seen", 0.0),
                           ("_kept_ts", -np.inf)):
            setattr(self, name, grow(getattr(self, name), n, fill))
        self._times = grow(self._times if self._times.size else np.zeros((0, self.history)), n, np.nan)
        ring = self._ring if self._ring.size else np.zeros((0, self.history, 4), dtype=np.float32)
        self._ring = grow(ring, n, np.nan)

    def update(self, slots: IntArray, ts: float, temp: FloatArray, power: FloatArray,
               learn: npt.NDArray[np.bool_] | None = None, node_temp: FloatArray | None = None,
               node_power: FloatArray | None = None) -> None:
        """One sample of every row (NaN where missing). R is learnt only from the rows in `learn` (default all):
        a GPU whose load just stepped is still settling, and its lagging temperature would bias R. `node_temp`
        and `node_power`: each row's node median (NaN or None where the node has too few GPUs to say)."""
        ok = np.isfinite(temp) & np.isfinite(power)
        s, t, raw = slots[ok], temp[ok], power[ok]
        last = self._last_ts[s]
        gap = np.nan_to_num(ts - last, nan=0.0)
        p = _smooth(self._power[s], raw, gap, self.smooth_s)
        self._power[s] = p
        self._sustained[s] = _smooth(self._sustained[s], raw, gap, self.sustained_s)
        self._last_ts[s] = ts
        nt = np.zeros(s.shape[0]) if node_temp is None else np.nan_to_num(node_temp[ok])
        npw = np.zeros(s.shape[0]) if node_power is None else np.nan_to_num(node_power[ok])
        due = ts - self._kept_ts[s] >= self.keep_every_s
        k = s[due]
        pos = (self._seen[k] % self.history).astype(np.int64)
        self._times[k, pos] = ts
        self._ring[k, pos] = np.column_stack([t[due], p[due], nt[due], npw[due]]).astype(np.float32)
        self._seen[k] += 1.0
        self._kept_ts[k] = ts
        if learn is not None:
            keep = learn[ok]
            s, t, p, gap = s[keep], t[keep], p[keep], gap[keep]
        count = self._count[s]
        a = np.maximum(1.0 - 0.5 ** (gap / self.half_life_s), 1.0 / (count + 1.0))
        mp, mt = self._mean_p[s], self._mean_t[s]
        mp, mt = np.where(np.isfinite(mp), mp, p), np.where(np.isfinite(mt), mt, t)
        dp, dt = p - mp, t - mt
        self._mean_p[s] = mp + a * dp
        self._mean_t[s] = mt + a * dt
        self._var_p[s] = (1 - a) * (self._var_p[s] + a * dp * dp)
        self._cov[s] = (1 - a) * (self._cov[s] + a * dp * dt)
        self._count[s] = count + 1.0

    def sustained_power(self, slots: IntArray) -> FloatArray:
        """The power each slot has drawn over the last minutes."""
        return np.asarray(self._sustained[slots], dtype=np.float64)

    def excess(self, slots: IntArray, temp: FloatArray) -> FloatArray:
        """How much hotter each row is than its learnt temperature at its present power (°C): T − (T̄ + R ×
        (P − P̄)). NaN until learnt, and while R is unknown for a power away from the learnt one."""
        var, cov, count = self._var_p[slots], self._cov[slots], self._count[slots]
        known = (var >= MIN_POWER_SPREAD_W ** 2) & (count >= 30)
        r = np.where(known, np.maximum(cov / np.maximum(var, 1e-9), 0.0), 0.0)
        dp = self._power[slots] - self._mean_p[slots]
        judged = (count >= 30) & (known | (np.abs(dp) <= MIN_POWER_SPREAD_W))
        return np.where(judged, temp - self._mean_t[slots] - r * dp, np.nan)

    def resistance(self, slot: int) -> float | None:
        """R (°C/W) once the power has moved enough to learn it; None before."""
        var = float(self._var_p[slot])
        if var < MIN_POWER_SPREAD_W ** 2 or self._count[slot] < 30:
            return None
        return max(0.0, float(self._cov[slot]) / var)

    def _samples(self, slot: int) -> FloatArray:
        """The kept history as float64 rows (t, T, P, node T, node P), oldest first."""
        ring = np.column_stack([self._times[slot], self._ring[slot].astype(np.float64)])
        ring = ring[np.isfinite(ring[:, :3]).all(axis=1)]
        return np.asarray(ring[np.argsort(ring[:, 0])], dtype=np.float64)

    def runaway_slope(self, slot: int, since: float = -np.inf) -> RunawaySlope | None:
        """The trend of T − R_c × P over the history from `since` on (see the module docstring for R_c); None
        while that spans less than `min_span_s`."""
        data = self._samples(slot)
        data = data[data[:, 0] >= since]
        if data.shape[0] < 10 or data[-1, 0] - data[0, 0] < self.min_span_s:
            return None
        t = data[:, 0] - data[0, 0]
        temp, power = data[:, 1] - data[:, 3], data[:, 2] - data[:, 4]  # against the node, where given
        power_slope, _ = _slope(t, power)
        upper = float(data[:, 1].mean() / max(float(data[:, 2].mean()), 1.0))
        y = temp - (upper if power_slope > 0 else 0.0) * power
        slope, t_stat = _slope(t, y)
        half = t.size // 2
        recent, recent_t = _slope(t[half:], y[half:])
        return RunawaySlope(slope * 3600.0, t_stat, slope * float(t[-1]), self.resistance(slot),
                            recent * 3600.0, recent_t, float(np.max(np.diff(y))))

    def climb_since(self, slot: int, since: float) -> tuple[float, float, int]:
        """Temperature slope (°C per hour), its t statistic and the sample count from `since` on."""
        data = self._samples(slot)
        data = data[data[:, 0] >= since]
        if data.shape[0] < 3:
            return 0.0, 0.0, int(data.shape[0])
        slope, t_stat = _slope(data[:, 0] - data[0, 0], data[:, 1])
        return slope * 3600.0, t_stat, int(data.shape[0])

    def rising(self, slot: int, min_per_h: float, min_t: float, since: float = -np.inf) -> bool:
        """Whether the thermal resistance is climbing: at `min_per_h` or faster, significantly, by `min_rise_c`
        over the history from `since`, and still over its later half."""
        slope = self.runaway_slope(slot, since)
        return (slope is not None and slope.per_h >= min_per_h and slope.t_stat >= min_t
                and slope.rise_c >= self.min_rise_c and slope.recent_per_h >= min_per_h
                and slope.recent_t_stat >= min_t / 2 and slope.largest_jump_c < slope.rise_c / 2)

    def reachable(self, slot: int, power_limit: float) -> float | None:
        """The temperature this GPU settles at when drawing `power_limit`, at today's R; None while R is
        unknown."""
        r = self.resistance(slot)
        data = self._samples(slot)
        if r is None or data.shape[0] == 0 or not np.isfinite(power_limit):
            return None
        temp, power = float(data[-1, 1]), float(data[-1, 2])
        return temp + r * max(power_limit - power, 0.0)


def _smooth(prev: FloatArray, value: FloatArray, gap: FloatArray, tau_s: float) -> FloatArray:
    """First-order smoothing over `tau_s` for irregular steps; the first value taken as it is."""
    w = 1.0 - np.exp(-gap / tau_s)
    return np.asarray(np.where(np.isfinite(prev), prev + w * (value - prev), value), dtype=np.float64)


def _slope(t: FloatArray, y: FloatArray) -> tuple[float, float]:
    """Least-squares slope of y on t and its t statistic (0, 0 for a degenerate t)."""
    tc, yc = t - t.mean(), y - y.mean()
    sxx = float((tc * tc).sum())
    if sxx <= 0:
        return 0.0, 0.0
    slope = float((tc * yc).sum()) / sxx
    resid = yc - slope * tc
    se = float(np.sqrt((resid * resid).sum() / max(t.size - 2, 1) / sxx))
    return slope, slope / max(se, 1e-12)
