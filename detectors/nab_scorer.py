"""A reimplementation of the Numenta Anomaly Benchmark's scorer (NAB v1.1, `nab/sweeper.py`).

Each row of a file gets a value from a scaled sigmoid of its position relative to the anomaly windows;
a detection in a window earns the best (earliest) detection's value, a window without one costs A_FN,
and every detection outside windows costs a little less the further it is past the last window. One
threshold is chosen for the pooled corpus (the highest corpus score; ties go to the highest threshold),
and the corpus score is normalised between the null detector (0) and a perfect one (100).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors.frame import FloatArray

NO_DETECTION_THRESHOLD = 1.1


@dataclass(frozen=True)
class Profile:
    """Weights of a true positive, a false positive and a false negative."""

    name: str
    a_tp: float
    a_fp: float
    a_fn: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


@dataclass(frozen=True)
class ScoredFile:
    """One file's anomaly scores and its windows as inclusive row ranges (first, last)."""

    name: str
    scores: FloatArray
    windows: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.scores.ndim != 1:
            raise ValueError(f"{self.name}: anomaly scores must be one-dimensional")
        if np.isnan(self.scores).any():
            raise ValueError(f"{self.name}: anomaly scores contain NaN at row "
                             f"{int(np.flatnonzero(np.isnan(self.scores))[0])}")
        last = -1
        for lo, hi in self.windows:
            if not last < lo <= hi < self.scores.shape[0]:
                raise ValueError(f"{self.name}: window rows ({lo}, {hi}) are out of order or out of the file")
            last = hi


@dataclass(frozen=True)
class ProfileResult:
    """The corpus score of one profile at its optimal threshold."""

    profile: str
    score: float
    raw_score: float
    threshold: float
    detected_in_windows: int
    detected_outside_windows: int
    file_scores: dict[str, float] = field(default_factory=dict)


def probation_length(n_rows: int, percent: float = 0.15) -> int:
    """Rows at the start of a file that are never scored: 15 % of the file, at most 750."""
    return int(min(math.floor(percent * n_rows), percent * 5000))


def scaled_sigmoid(y: FloatArray) -> FloatArray:
    """2 / (1 + exp(5y)) - 1, and -1 from y = 3 on (NAB's cut-off)."""
    with np.errstate(over="ignore"):
        s = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y >= 3.0, -1.0, s)


@dataclass(frozen=True)
class _RowValues:
    value: FloatArray  # weighted sweep value of each scorable row
    window: npt.NDArray[np.int64]  # corpus-wide window id, -1 outside windows
    score: FloatArray  # anomaly score of each scorable row


def _row_values(f: ScoredFile, p: Profile, window_base: int) -> _RowValues:
    n = f.scores.shape[0]
    i = np.arange(n, dtype=np.float64)
    value = np.full(n, -p.a_fp)  # before the first window: sigma(3) = -1
    window = np.full(n, -1, dtype=np.int64)
    max_tp = float(scaled_sigmoid(np.array([-1.0]))[0])
    for k, (lo, hi) in enumerate(f.windows):
        width = float(hi - lo + 1)
        inside = slice(lo, hi + 1)
        value[inside] = p.a_tp * scaled_sigmoid(-(hi - i[inside] + 1.0) / width) / max_tp
        window[inside] = window_base + k
        end = f.windows[k + 1][0] if k + 1 < len(f.windows) else n
        after = slice(hi + 1, end)
        with np.errstate(divide="ignore"):
            y = np.abs(hi - i[after]) / (width - 1.0)
        value[after] = p.a_fp * scaled_sigmoid(y)
    keep = slice(probation_length(n), n)
    return _RowValues(value[keep], window[keep], f.scores[keep])


def _scorable_windows(f: ScoredFile) -> int:
    """Windows with at least one row after probation (the ones that count as misses when undetected)."""
    p = probation_length(f.scores.shape[0])
    return sum(1 for _, hi in f.windows if hi >= p)


def sweep(files: Sequence[ScoredFile], profile: Profile) -> tuple[FloatArray, FloatArray]:
    """Corpus raw score S(T) at every candidate threshold, highest threshold first.

    Candidates: "no detection" (1.1) and every distinct anomaly score of the scorable rows.
    """
    parts: list[_RowValues] = []
    base = 0
    for f in files:
        parts.append(_row_values(f, profile, base))
        base += len(f.windows)
    value = np.concatenate([r.value for r in parts]) if parts else np.zeros(0)
    window = np.concatenate([r.window for r in parts]) if parts else np.zeros(0, dtype=np.int64)
    score = np.concatenate([r.score for r in parts]) if parts else np.zeros(0)
    n_windows = sum(_scorable_windows(f) for f in files)

    order = np.argsort(-score, kind="stable")
    value, window, score = value[order], window[order], score[order]
    delta = np.where(window < 0, value, 0.0)
    # A window's contribution is the best value among its detected rows: its running maximum over the
    # sorted rows, starting from -A_FN. Each improvement adds its increase at that row's position.
    for w in np.unique(window[window >= 0]):
        pos = np.flatnonzero(window == w)
        best = np.maximum.accumulate(np.maximum(value[pos], -profile.a_fn))
        delta[pos] += np.diff(best, prepend=-profile.a_fn)
    cumulative = -profile.a_fn * n_windows + np.cumsum(delta)
    last_of_level = np.flatnonzero(np.append(score[1:] != score[:-1], True) if score.size else score > 0)
    thresholds = np.concatenate([[NO_DETECTION_THRESHOLD], score[last_of_level]])
    totals = np.concatenate([[-profile.a_fn * n_windows], cumulative[last_of_level]])
    return thresholds, totals


def file_score(f: ScoredFile, profile: Profile, threshold: float) -> tuple[float, int, int]:
    """One file's raw score with detections at `anomaly_score >= threshold`, and its detected row counts."""
    rows = _row_values(f, profile, 0)
    hit = rows.score >= threshold
    total = float(rows.value[hit & (rows.window < 0)].sum())
    for w in range(len(f.windows)):
        in_w = rows.window == w
        if not in_w.any():
            continue
        det = hit & in_w
        total += float(rows.value[det].max()) if det.any() else -profile.a_fn
    return total, int((hit & (rows.window >= 0)).sum()), int((hit & (rows.window < 0)).sum())


def score_corpus(files: Sequence[ScoredFile], profile: Profile) -> ProfileResult:
    """The normalised NAB score of a corpus for one profile, with one threshold for all files."""
    thresholds, totals = sweep(files, profile)
    best = int(np.argmax(totals))  # first maximum = highest threshold among ties
    threshold = float(thresholds[best])
    n_windows = sum(_scorable_windows(f) for f in files)
    null = -profile.a_fn * n_windows
    perfect = profile.a_tp * n_windows
    per_file: dict[str, float] = {}
    tp = fp = 0
    for f in files:
        s, t, p = file_score(f, profile, threshold)
        per_file[f.name] = s
        tp += t
        fp += p
    raw = float(totals[best])
    score = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return ProfileResult(profile.name, score, raw, threshold, tp, fp, per_file)


def score_all_profiles(files: Sequence[ScoredFile]) -> dict[str, ProfileResult]:
    """`score_corpus` for NAB's three profiles."""
    return {p.name: score_corpus(files, p) for p in PROFILES}
