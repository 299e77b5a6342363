"""A multivariate model per GPU model class: is this GPU's vector of metrics unlike its class's history?

Vectors are standardised per class (median and inter-quartile range of the training reservoir), missing
metrics imputed at the class median. Two scikit-learn models are offered: `isolation_forest`
(IsolationForest: no shape assumed, ~40 ms per 8,000 vectors) and `robust_covariance` (Mahalanobis
distance under a one-step reweighted covariance: one matrix product, the default for the cycle budget).
A sample is anomalous above the `quantile` of the training scores times `margin`, for `persist_s`
of data time; the episode ends when the score falls clearly below that (hysteresis), and flagged
samples never enter the training reservoir (an ongoing fault must not become the new normal).
The model is refitted every `refit_s` of data time on a reservoir of past samples, after scoring the
current sample, so no sample is ever scored by a model that saw it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.covariance import EmpiricalCovariance
from sklearn.ensemble import IsolationForest

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FloatArray, GpuLabels
from detectors.stream import CycleView, IntArray, OnsetTracker, gpu_finding_fields, grow

FEATURES: tuple[str, ...] = (m.GPU_TEMP, m.MEMORY_TEMP, m.POWER_USAGE, m.SM_CLOCK, m.GPU_UTIL, m.FB_USED)
# The least spread each feature is given: a reading's own resolution and noise (°C, °C, W, MHz, %, MiB). A
# class whose history sat still (a fleet idle while the model learnt) must not make a one-step move of a
# reading look like millions of standard deviations.
MIN_SCALE = np.array([1.0, 1.0, 5.0, 15.0, 1.0, 256.0])
Method = Literal["isolation_forest", "robust_covariance"]


@dataclass
class _ClassModel:
    """Reservoir, fitted model and threshold of one GPU model class."""

    reservoir: FloatArray
    filled: int = 0
    seen: int = 0
    model: Any = None
    center: FloatArray | None = None
    scale: FloatArray | None = None
    threshold: float = np.inf
    next_fit: float = -np.inf


@dataclass
class MultivariateModel:
    method: Method = "robust_covariance"
    reservoir_size: int = 4096
    sample_per_step: int = 64
    min_fit: int = 512
    refit_s: float = 3600.0
    quantile: float = 0.995
    margin: float | None = None  # default: 1.5 for robust_covariance, 1.0 for isolation_forest
    persist_s: float = 45.0  # data time an anomaly lasts before it is reported
    seed: int = 0
    name: str = "multivariate"
    _classes: dict[str, _ClassModel] = field(default_factory=dict)
    _class_rows: tuple[GpuLabels, dict[str, IntArray]] | None = None
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    _run: FloatArray = field(default_factory=lambda: np.zeros(0))
    _state: OnsetTracker = field(default_factory=OnsetTracker)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def _rows_by_class(self, labels: GpuLabels, slots: IntArray) -> dict[str, IntArray]:
        """Rows of each model class in slot order, so sampling does not depend on the frame's row order."""
        if self._class_rows is None or self._class_rows[0] != labels:
            names = np.array(labels.model_name)
            by_slot = np.argsort(slots, kind="stable")
            self._class_rows = (labels, {str(c): by_slot[names[by_slot] == c] for c in np.unique(names)})
        return self._class_rows[1]

    def update(self, view: CycleView) -> list[Finding]:
        cols = [view.metric(f) for f in FEATURES]
        if all(c is None for c in cols):
            return []
        n_rows = view.slots.shape[0]
        self._run = grow(self._run, view.n_slots, 0.0)
        out: list[Finding] = []
        for j, ts in view.columns():
            x = np.column_stack([np.full(n_rows, np.nan) if c is None else c[:, j] for c in cols])
            for cls, rows in self._rows_by_class(view.frame.gpus, view.slots).items():
                state = self._classes.get(cls)
                if state is None:
                    state = self._classes[cls] = _ClassModel(np.zeros((self.reservoir_size, len(FEATURES))))
                found, high = self._score(view, ts, cls, state, rows, x[rows])
                out += found
                self._add(state, x[rows][~high])  # flagged samples stay out of the training reservoir
                if ts >= state.next_fit and state.filled >= self.min_fit:
                    self._fit(state)
                    state.next_fit = ts + self.refit_s
        return out

    def _standardise(self, state: _ClassModel, x: FloatArray) -> FloatArray:
        assert state.center is not None and state.scale is not None
        z = (x - state.center) / state.scale
        return np.asarray(np.where(np.isfinite(z), z, 0.0), dtype=np.float64)

    def _scores(self, state: _ClassModel, z: FloatArray) -> FloatArray:
        if self.method == "isolation_forest":
            return np.asarray(-state.model.score_samples(z))
        return np.sqrt(np.asarray(state.model.mahalanobis(z), dtype=np.float64))

    def _score(self, view: CycleView, ts: float, cls: str, state: _ClassModel, rows: IntArray,
               x: FloatArray) -> tuple[list[Finding], npt.NDArray[np.bool_]]:
        if state.model is None:
            return [], np.zeros(rows.shape[0], dtype=bool)
        usable = np.isfinite(x).sum(axis=1) * 2 >= x.shape[1]
        score = np.where(usable, self._scores(state, self._standardise(state, x)), 0.0)
        slots = view.slots[rows]
        high = usable & (score > state.threshold)
        run = np.where(high, self._run[slots] + 1, 0.0)
        self._run[slots] = run
        out = []
        release = 0.7 if self.method == "robust_covariance" else 0.9  # IF scores live in a narrow band
        off = usable & (score < release * state.threshold)
        for i in self._state.step(slots, run >= view.samples(self.persist_s), off):
            row = int(rows[i])
            z = self._standardise(state, x[i:i + 1])[0]
            top = np.argsort(-np.abs(z))[:3]
            out.append(Finding(
                ts=ts, kind=FindingKind.ANOMALY, severity=Severity.INFO,
                score=float(min(1.0, score[i] / (2 * state.threshold))),
                detector=f"{self.name}.{self.method}",
                evidence={"model_class": cls, "score": float(score[i]), "threshold": float(state.threshold),
                          "top_metrics": {FEATURES[k]: float(z[k]) for k in top}},
                **gpu_finding_fields(view, row)))
        return out, high

    def _add(self, state: _ClassModel, x: FloatArray) -> None:
        usable = np.flatnonzero(np.isfinite(x).all(axis=1))
        if usable.size == 0:
            return
        take = self._rng.choice(usable, size=min(self.sample_per_step, usable.size), replace=False)
        for vec in x[take]:
            # reservoir sampling: every past sample equally likely to be kept
            if state.filled < self.reservoir_size:
                state.reservoir[state.filled] = vec
                state.filled += 1
            else:
                k = int(self._rng.integers(0, state.seen + 1))
                if k < self.reservoir_size:
                    state.reservoir[k] = vec
            state.seen += 1

    def _fit(self, state: _ClassModel) -> None:
        data = state.reservoir[: state.filled]
        center = np.median(data, axis=0)
        q75, q25 = np.percentile(data, [75, 25], axis=0)
        state.center = center
        state.scale = np.maximum((q75 - q25) / 1.349, np.maximum(MIN_SCALE, 1e-3 * np.abs(center)))
        z = self._standardise(state, data)
        if self.method == "isolation_forest":
            state.model = IsolationForest(n_estimators=50, max_samples=256, random_state=self.seed).fit(z)
        else:
            # one-step reweighted covariance: refit without the 5 % farthest samples of a first fit
            first = EmpiricalCovariance().fit(z)
            d = first.mahalanobis(z)
            state.model = EmpiricalCovariance().fit(z[d <= np.quantile(d, 0.95)])
        margin = self.margin
        if margin is None:
            margin = 1.5 if self.method == "robust_covariance" else 1.0
        state.threshold = float(np.quantile(self._scores(state, z), self.quantile)) * margin
