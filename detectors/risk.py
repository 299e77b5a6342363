"""A learned risk model: the calibrated probability that a GPU fails within a horizon.

Training takes labelled history from any source (the simulator's runs, a real fleet's incidents): one
row of features per GPU and time, a label (1 when the GPU failed within `horizon_s` after that time)
and a group (the run or seed the row came from). Validation is on groups the model never saw, so the
reported metrics say how it does on a new run, not on the rows next to its training rows.

The estimator is scikit-learn's HistGradientBoostingClassifier (missing features are native: an
absent series is NaN) inside CalibratedClassifierCV (isotonic), so a 0.3 means about 3 in 10.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from threadpoolctl import threadpool_limits

from detectors import metrics as m
from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FleetFrame, FloatArray
from detectors.registry import ModelRegistry, RegistryError
from detectors.stream import CycleView, OnsetTracker, gpu_finding_fields

GAUGES: tuple[str, ...] = (m.GPU_TEMP, m.MEMORY_TEMP, m.POWER_USAGE, m.SM_CLOCK, m.GPU_UTIL, m.FB_USED)
COUNTERS: tuple[str, ...] = (m.ECC_SBE_VOL_TOTAL, m.ECC_DBE_VOL_TOTAL, m.UNCORRECTABLE_REMAPPED_ROWS,
                             m.NVLINK_CRC_FLIT_ERRORS, m.PCIE_REPLAY_COUNTER)
FEATURE_NAMES: tuple[str, ...] = (
    *(f"{g}:{stat}" for g in GAUGES for stat in ("last", "mean", "slope_per_h")),
    *(f"{c}:{stat}" for c in COUNTERS for stat in ("last", "increase_per_h")),
    f"{m.XID_ERRORS}:events", f"{m.ROW_REMAP_FAILURE}:last",
)


def gpu_features(frame: FleetFrame, upto: int, window: int = 20) -> FloatArray:
    """Features `[gpu, FEATURE_NAMES]` from the `window` samples ending at column `upto` (inclusive).

    Only columns up to `upto` are read, so features at a time never see later data.
    """
    lo = max(0, upto - window + 1)
    t = frame.timestamps[lo:upto + 1]
    hours = (t - t[-1]) / 3600.0
    cols: list[FloatArray] = []
    nan = np.full(frame.n_gpus, np.nan)
    for name in GAUGES:
        arr = frame.metric(name)
        if arr is None:
            cols += [nan, nan, nan]
            continue
        x = np.ascontiguousarray(arr[:, lo:upto + 1])  # same memory layout, same float sums
        cols += [x[:, -1], _nanmean(x), _slope(hours, x)]
    for name in COUNTERS:
        arr = frame.metric(name)
        if arr is None:
            cols += [nan, nan]
            continue
        x = np.ascontiguousarray(arr[:, lo:upto + 1])
        span = max(float(hours[-1] - hours[0]), 1e-9)
        cols += [x[:, -1], (_last_finite(x) - _first_finite(x)) / span]
    xid = frame.metric(m.XID_ERRORS)
    if xid is None:
        cols.append(nan)
    else:
        x = xid[:, lo:upto + 1]
        changes = (np.diff(x, axis=1) != 0) & (x[:, 1:] > 0)
        cols.append(changes.sum(axis=1).astype(np.float64) + (x[:, 0] > 0))
    remap_fail = frame.metric(m.ROW_REMAP_FAILURE)
    cols.append(nan if remap_fail is None else remap_fail[:, upto])
    return np.column_stack(cols)


def _nanmean(x: FloatArray) -> FloatArray:
    n = np.isfinite(x).sum(axis=1)
    return np.where(n > 0, np.nansum(x, axis=1) / np.maximum(n, 1), np.nan)


def _first_finite(x: FloatArray) -> FloatArray:
    ok = np.isfinite(x)
    idx = np.argmax(ok, axis=1)
    return np.where(ok.any(axis=1), x[np.arange(x.shape[0]), idx], np.nan)


def _last_finite(x: FloatArray) -> FloatArray:
    return _first_finite(x[:, ::-1])


def _slope(hours: FloatArray, x: FloatArray) -> FloatArray:
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    h = np.where(ok, hours[None, :], 0.0)
    hm = h.sum(axis=1) / np.maximum(n, 1)
    xm = np.where(ok, x, 0.0).sum(axis=1) / np.maximum(n, 1)
    hc = np.where(ok, h - hm[:, None], 0.0)
    xc = np.where(ok, x - xm[:, None], 0.0)
    sxx = (hc * hc).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n >= 3) & (sxx > 0), (hc * xc).sum(axis=1) / sxx, np.nan)


@dataclass(frozen=True)
class LabelledHistory:
    """Training or validation rows: features, failure-within-horizon labels, and each row's group."""

    features: FloatArray
    labels: npt.NDArray[np.int64]
    groups: tuple[str, ...]
    horizon_s: float
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.features.shape[1] != len(self.feature_names):
            raise ValueError(f"features must be [rows, {len(self.feature_names)}], got {self.features.shape}")
        if self.labels.shape != (n,) or len(self.groups) != n:
            raise ValueError("labels and groups need one entry per feature row")
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError("labels must be 0 (no failure within the horizon) or 1")
        if np.isinf(self.features).any():
            raise ValueError("features must be finite or NaN (missing), not infinite")

    def select(self, rows: npt.NDArray[np.bool_]) -> LabelledHistory:
        return LabelledHistory(self.features[rows], self.labels[rows],
                               tuple(g for g, k in zip(self.groups, rows, strict=True) if k),
                               self.horizon_s, self.feature_names)

    def data_hash(self) -> str:
        """sha256 over features, labels, groups, horizon and feature names: names the training data."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.features, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        h.update("\x1f".join(self.groups).encode())
        h.update(repr((self.horizon_s, self.feature_names)).encode())
        return h.hexdigest()


def history_from_frame(frame: FleetFrame, failure_at: Mapping[tuple[str, int], float], horizon_s: float,
                       group: str, every: int = 10, window: int = 20) -> LabelledHistory:
    """Labelled rows from one run's frame and its ground truth (the simulator writes both).

    Every `every` samples, each GPU still alive gives one row: label 1 when its failure
    (`failure_at[(hostname, gpu)]`, unix seconds) falls within `horizon_s` after that sample.
    """
    fail = np.array([failure_at.get(frame.gpus.key(r), np.inf) for r in range(frame.n_gpus)])
    feats, labels = [], []
    for upto in range(window - 1, frame.n_steps, every):
        t = float(frame.timestamps[upto])
        alive = fail > t
        feats.append(gpu_features(frame, upto, window)[alive])
        labels.append((fail[alive] - t <= horizon_s).astype(np.int64))
    x = np.vstack(feats) if feats else np.zeros((0, len(FEATURE_NAMES)))
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    return LabelledHistory(x, y, (group,) * y.size, horizon_s)


def concat(histories: Sequence[LabelledHistory]) -> LabelledHistory:
    """One history from several runs (same features and horizon)."""
    if not histories:
        raise ValueError("no histories to join")
    first = histories[0]
    if any(h.feature_names != first.feature_names or h.horizon_s != first.horizon_s for h in histories):
        raise ValueError("histories with different features or horizons cannot be joined")
    return LabelledHistory(np.vstack([h.features for h in histories]),
                           np.concatenate([h.labels for h in histories]),
                           tuple(g for h in histories for g in h.groups), first.horizon_s,
                           first.feature_names)


def split_by_group(history: LabelledHistory, validation_groups: Sequence[str]) -> tuple[
        LabelledHistory, LabelledHistory]:
    """(training rows, validation rows): whole groups go to one side or the other."""
    held = np.isin(np.array(history.groups), np.array(list(validation_groups)))
    return history.select(~held), history.select(held)


@dataclass
class RiskModel:
    """A fitted, calibrated risk model and what it was fitted for."""

    estimator: Any
    feature_names: tuple[str, ...]
    horizon_s: float
    metrics: dict[str, float | None] = field(default_factory=dict)

    def predict(self, features: FloatArray) -> FloatArray:
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(f"expected features [rows, {len(self.feature_names)}], got {features.shape}")
        with threadpool_limits(1):
            return np.asarray(self.estimator.predict_proba(features)[:, 1], dtype=np.float64)


def train_risk_model(train: LabelledHistory, validation: LabelledHistory, seed: int = 0,
                     max_iter: int = 200, threads: int = 1) -> RiskModel:
    """Fit on `train`, measure on `validation` (whose groups must be new to the model).

    `threads` caps OpenMP: on a shared worker, more threads than free cores is many times slower.
    """
    overlap = set(train.groups) & set(validation.groups)
    if overlap:
        raise ValueError(f"validation groups also in training: {sorted(overlap)[:3]}; split by group")
    if train.feature_names != validation.feature_names or train.horizon_s != validation.horizon_s:
        raise ValueError("training and validation rows have different features or horizons")
    if len(np.unique(train.labels)) < 2:
        raise ValueError("training rows need both failures and non-failures")
    base = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1, random_state=seed)
    with threadpool_limits(threads):
        estimator = CalibratedClassifierCV(base, method="isotonic", cv=3).fit(train.features, train.labels)
        model = RiskModel(estimator, train.feature_names, train.horizon_s)
        model.metrics = evaluate(model, validation)
    return model


def evaluate(model: RiskModel, rows: LabelledHistory) -> dict[str, float | None]:
    """Brier score, log loss, ROC AUC (None with one class), expected calibration error, base rate."""
    if rows.features.shape[0] == 0:
        raise ValueError("no validation rows")
    p = model.predict(rows.features)
    y = rows.labels
    two = len(np.unique(y)) == 2
    return {
        "rows": float(y.size),
        "base_rate": float(y.mean()),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "roc_auc": float(roc_auc_score(y, p)) if two else None,
        "ece": expected_calibration_error(y, p),
    }


def expected_calibration_error(y: npt.NDArray[np.int64], p: FloatArray, bins: int = 10) -> float:
    """Mean |observed rate - predicted probability| over probability bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(float(y[sel].mean()) - float(p[sel].mean()))
    return float(total / max(y.size, 1))


@dataclass
class RiskScoring:
    """Scores every GPU with a registered risk model every `every_s` of data time.

    Features come from the frame's own window (the samples up to the scored one), so the frames a
    worker pulls must reach `window` samples back.
    """

    model: RiskModel
    model_version: str
    threshold: float = 0.5
    every_s: float = 300.0
    window: int = 20
    name: str = "risk"
    _next: float = -np.inf
    _state: OnsetTracker = field(default_factory=OnsetTracker)

    def update(self, view: CycleView) -> list[Finding]:
        out: list[Finding] = []
        for j, ts in view.columns():
            if ts < self._next:
                continue
            self._next = ts + self.every_s
            p = self.model.predict(gpu_features(view.frame, view.start + j, self.window))
            high = p >= self.threshold
            for row in self._state.step(view.slots, high, p < self.threshold / 2):
                out.append(Finding(
                    ts=ts, kind=FindingKind.ANOMALY, severity=Severity.WARNING, score=float(p[row]), detector=self.name,
                    evidence={"probability": float(p[row]), "horizon_s": self.model.horizon_s,
                              "model_version": self.model_version},
                    predicted_failure_at=ts + self.model.horizon_s, **gpu_finding_fields(view, int(row))))
        return out


RISK_MODEL_NAME = "gpu-failure-risk"


def risk_stage_from_registry(registry: ModelRegistry, name: str = RISK_MODEL_NAME, version: int | None = None,
                             threshold: float = 0.5) -> RiskScoring:
    """The scoring stage a worker adds to its cycle, with the registered model (latest by default)."""
    model, meta = registry.load(name, version)
    if not isinstance(model, RiskModel):
        raise RegistryError(f"{meta.tag} holds a {type(model).__name__}, not a RiskModel")
    return RiskScoring(model, meta.tag, threshold=threshold)
