"""Streaming univariate anomaly detectors for one series (the NAB task): one score in [0, 1] per sample,
each computed from that sample and the ones before it only.

`SequenceEnsemble` (the default, name "gpuops") joins three views of the series, each turned into a
probability by the same anomaly-likelihood step (how unusual the recent average of a raw score is
against that raw score's own history):

- sequence novelty: the series quantised into fixed-width bins (width set once after a warm-up), and
  the share of recent contexts (the last 1..K bins) never seen before. It catches shape changes that a
  level test misses (a daily pattern gone flat, spikes arriving in a new rhythm);
- a robust z-score of the value against a trailing window (median and MAD), for level shifts and spikes;
- a robust z-score of the first difference against a trailing window, for sudden jumps.

The joined score then rests: after a score above `rest_level`, the next `rest_rows` scores are damped,
so one event is reported once instead of on every row (NAB charges every extra detection as a false
positive). Tuned on the whole NAB subset at once: no per-file settings, the labels never read.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detectors.frame import FloatArray


def _trailing(x: FloatArray, window: int, how: str, min_periods: int) -> FloatArray:
    """Statistic `how` of x[t - window + 1 .. t] for each t; NaN until `min_periods` samples exist.

    `x` may start with NaN (a shifted series); those leading samples are not counted.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    finite = np.isfinite(x)
    lead = int(np.argmax(finite)) if finite.any() else n
    y = x[lead:]
    if y.size == 0:
        return out
    if how in ("mean", "std"):
        stat = _moments(y, window, how)
    elif how in ("max", "min"):
        stat = _extreme(y, window, np.max if how == "max" else np.min)
    else:
        stat = _running_median(y, window)
    count = np.minimum(np.arange(1, y.shape[0] + 1), window)
    stat[count < max(min_periods, 1)] = np.nan
    out[lead:] = stat
    return out


def _running_median(y: FloatArray, window: int) -> FloatArray:
    """Median of each trailing window, kept as a sorted list (O(window) per step, no re-sorting)."""
    values = y.tolist()
    ordered: list[float] = []
    out = np.empty(len(values))
    for t, v in enumerate(values):
        if t >= window:
            del ordered[bisect.bisect_left(ordered, values[t - window])]
        bisect.insort(ordered, v)
        k = len(ordered)
        out[t] = ordered[k // 2] if k % 2 else 0.5 * (ordered[k // 2 - 1] + ordered[k // 2])
    return out


def _moments(y: FloatArray, window: int, how: str) -> FloatArray:
    """Trailing mean or sample standard deviation from running sums (partial windows at the start)."""
    c1 = np.concatenate([[0.0], np.cumsum(y)])
    c2 = np.concatenate([[0.0], np.cumsum(y * y)])
    hi = np.arange(1, y.shape[0] + 1)
    lo = np.maximum(hi - window, 0)
    k = (hi - lo).astype(np.float64)
    s1 = c1[hi] - c1[lo]
    mean = s1 / k
    if how == "mean":
        return np.asarray(mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (c2[hi] - c2[lo] - s1 * mean) / (k - 1.0)
    return np.asarray(np.sqrt(np.maximum(var, 0.0)))


def _extreme(y: FloatArray, window: int, fn: Callable[..., FloatArray]) -> FloatArray:
    acc = np.maximum.accumulate if fn is np.max else np.minimum.accumulate
    stat = np.asarray(acc(y), dtype=np.float64)
    if y.shape[0] >= window:
        stat[window - 1:] = fn(np.lib.stride_tricks.sliding_window_view(y, window), axis=-1)
    return stat


def _shift(x: FloatArray) -> FloatArray:
    return np.concatenate([[np.nan], x[:-1]])


def robust_z(x: FloatArray, window: int, min_periods: int = 30) -> FloatArray:
    """|x_t - median| / (1.4826 MAD) against the `window` samples before t (t itself excluded)."""
    prev = _shift(x)
    med = _shift(_trailing(x, window, "median", min_periods))
    mad = _trailing(np.abs(prev - med), window, "median", min_periods)
    spread = np.maximum(1.4826 * mad, _scale_floor(prev, window, min_periods))
    with np.errstate(invalid="ignore"):
        z = np.abs(x - med) / spread
    return np.nan_to_num(z, nan=0.0)


def _scale_floor(prev: FloatArray, window: int, min_periods: int) -> FloatArray:
    """A floor on the spread so a flat stretch does not turn the smallest wiggle into infinity."""
    std = _trailing(prev, window, "std", min_periods)
    rng = _trailing(prev, window * 4, "max", min_periods) - _trailing(prev, window * 4, "min", min_periods)
    return np.maximum(np.nan_to_num(0.1 * std), np.nan_to_num(1e-3 * rng) + 1e-9)


def sequence_novelty(x: FloatArray, warmup: int, bins: int, max_order: int) -> FloatArray:
    """Share of the contexts (last 1..max_order bins) at each step that were never seen before."""
    n = x.shape[0]
    out = np.zeros(n)
    if n <= warmup:
        return out
    lo, hi = float(np.min(x[:warmup])), float(np.max(x[:warmup]))
    width = (hi - lo) / bins if hi > lo else max(abs(hi), 1.0) / bins
    q = np.floor((x - lo) / width).astype(np.int64).tolist()
    seen: set[tuple[int, ...]] = set()
    t: int
    for t in range(n):
        new = 0
        for k in range(1, max_order + 1):
            if t - k + 1 < 0:
                break
            ctx = tuple(q[t - k + 1:t + 1])
            if ctx not in seen:
                new += 1
                seen.add(ctx)
        if t >= warmup:
            out[t] = new / max_order
    return out


def likelihood(raw: FloatArray, short: int, long: int, min_periods: int) -> FloatArray:
    """P(recent mean of `raw` is this high) under a normal fit to its trailing history; in [0, 1]."""
    recent = _trailing(raw, short, "mean", 1)
    prev = _shift(recent)
    mu = _trailing(prev, long, "mean", min_periods)
    sd = np.maximum(np.nan_to_num(_trailing(prev, long, "std", min_periods)), 1e-3)
    z = np.nan_to_num((recent - mu) / sd, nan=0.0)
    p = 0.5 * (1.0 + _ERF(z / math.sqrt(2.0)))
    return np.asarray(p, dtype=np.float64)


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def log_score(p: FloatArray) -> FloatArray:
    """Likelihood mapped to [0, 1] on a log scale: 0.5 at 1 - p = 1e-5, 1.0 at 1e-10."""
    return np.clip(np.log(1.0000000001 - p) / math.log(1e-10), 0.0, 1.0)


def rest(score: FloatArray, level: float, rows: int, damp: float) -> FloatArray:
    """Damp the `rows` scores that follow any score at or above `level` (one report per event)."""
    out = score.copy()
    quiet_until = -1
    for t in np.flatnonzero(score >= level).tolist():
        if t <= quiet_until:
            out[t] *= damp
            continue
        quiet_until = t + rows
        out[t + 1:t + rows + 1] *= damp
    return out


@dataclass(frozen=True)
class SequenceEnsemble:
    """The default NAB detector (see the module docstring)."""

    warmup: int = 150
    bins: int = 22
    max_order: int = 3
    value_window: int = 400
    diff_window: int = 300
    short: int = 8
    long: int = 2000
    min_periods: int = 100
    weights: tuple[float, float, float] = (0.8, 1.0, 1.0)
    rest_level: float = 0.58
    rest_rows: int = 150
    damp: float = 0.0

    def __call__(self, values: FloatArray) -> FloatArray:
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 1 or not np.all(np.isfinite(x)):
            raise ValueError("values must be a one-dimensional array of finite numbers")
        if x.size == 0:
            return np.zeros(0)
        raws = (
            sequence_novelty(x, self.warmup, self.bins, self.max_order),
            np.minimum(robust_z(x, self.value_window), 50.0),
            np.minimum(robust_z(np.diff(x, prepend=x[0]), self.diff_window), 50.0),
        )
        parts = [log_score(likelihood(r, self.short, self.long, self.min_periods)) for r in raws]
        joined = np.max(np.stack([w * p for w, p in zip(self.weights, parts, strict=True)]), axis=0)
        joined[: self.warmup] = 0.0
        return rest(np.clip(joined, 0.0, 1.0), self.rest_level, self.rest_rows, self.damp)


@dataclass(frozen=True)
class RollingZScore:
    """Baseline: robust z-score against a trailing window, squashed into [0, 1]."""

    window: int = 400

    def __call__(self, values: FloatArray) -> FloatArray:
        z = robust_z(np.asarray(values, dtype=np.float64), self.window)
        return np.asarray(1.0 - np.exp(-z / 4.0))


UnivariateDetector = Callable[[FloatArray], FloatArray]

DETECTORS: dict[str, Callable[[], UnivariateDetector]] = {
    "gpuops": SequenceEnsemble,
    "zscore": RollingZScore,
}
