"""The learned risk model (trained and validated on different runs) and the model registry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from detectors import metrics as m
from detectors.pipeline import DetectionCycle
from detectors.registry import ModelRegistry, RegistryError
from detectors.risk import (
    FEATURE_NAMES,
    LabelledHistory,
    RiskModel,
    RiskScoring,
    concat,
    gpu_features,
    history_from_frame,
    risk_stage_from_registry,
    split_by_group,
    train_risk_model,
)
from gpuops.model_store import DirectoryStore
from tests.unit import det_synth

HORIZON_S = 1800.0


def run_history(seed: int) -> LabelledHistory:
    """One simulated run: a few GPUs heat up and storm SBEs before failing."""
    ts, met, gpus, _, _ = det_synth.healthy(nodes=4, gpus_per_node=8, steps=300, seed=seed)
    rng = np.random.default_rng(seed)
    failure_at = {}
    for g in rng.choice(32, size=6, replace=False):
        onset = int(rng.integers(60, 200))
        failure_at[gpus.key(int(g))] = float(ts[onset + 80])
        met[m.GPU_TEMP][g, onset:] += np.linspace(0, 30, 300 - onset)
        met[m.ECC_SBE_VOL_TOTAL][g, onset:] += np.cumsum(rng.poisson(3.0, 300 - onset))
    return history_from_frame(det_synth.frame(ts, met, gpus), failure_at, HORIZON_S, f"seed-{seed}")


def corpus(seeds: range) -> LabelledHistory:
    return concat([run_history(s) for s in seeds])


@pytest.fixture(scope="module")
def trained() -> tuple[RiskModel, LabelledHistory, LabelledHistory]:
    data = corpus(range(6))
    train, val = split_by_group(data, ["seed-4", "seed-5"])
    return train_risk_model(train, val, max_iter=40), train, val


def test_features_are_causal_and_missing_series_are_nan() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=4, steps=60)
    f = det_synth.frame(ts, met, gpus)
    np.testing.assert_array_equal(gpu_features(f, 40), gpu_features(f.until(float(ts[40])), 40))
    partial = det_synth.frame(ts, {m.GPU_TEMP: met[m.GPU_TEMP]}, gpus)
    x = gpu_features(partial, 40)
    assert x.shape == (4, len(FEATURE_NAMES))
    assert np.isfinite(x[:, 0]).all() and np.isnan(x[:, 5]).all()


def test_risk_model_generalises_to_unseen_runs_and_is_calibrated(
        trained: tuple[RiskModel, LabelledHistory, LabelledHistory]) -> None:
    model, train, val = trained
    assert not set(train.groups) & set(val.groups)
    metrics = model.metrics
    assert metrics["roc_auc"] is not None and metrics["roc_auc"] > 0.9
    base = metrics["base_rate"]
    assert base is not None and metrics["brier"] < 0.5 * base * (1 - base)  # half the base rate's Brier
    assert metrics["ece"] < 0.1
    p = model.predict(val.features)
    assert p[val.labels == 1].mean() > 3 * p[val.labels == 0].mean()


def test_training_refuses_leaky_or_degenerate_splits() -> None:
    data = corpus(range(2))
    with pytest.raises(ValueError, match="validation groups also in training"):
        train_risk_model(data, data)
    train, val = split_by_group(data, ["seed-1"])
    no_failures = LabelledHistory(train.features, np.zeros_like(train.labels), train.groups, HORIZON_S)
    with pytest.raises(ValueError, match="both failures"):
        train_risk_model(no_failures, val)
    with pytest.raises(ValueError, match="infinite"):
        LabelledHistory(np.full((1, len(FEATURE_NAMES)), np.inf), np.zeros(1, dtype=np.int64), ("a",), 1.0)


Trained = tuple[RiskModel, LabelledHistory, LabelledHistory]


def test_registry_versions_and_verifies_artefacts(tmp_path: Path, trained: Trained) -> None:
    model, train, _ = trained
    registry = ModelRegistry(DirectoryStore(tmp_path / "models"))
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    v1 = registry.register("gpu-failure-risk", model, data_hash=train.data_hash(),
                           metrics=dict(model.metrics), params={"horizon_s": HORIZON_S}, created_at=when)
    v2 = registry.register("gpu-failure-risk", model, data_hash=train.data_hash(), metrics={})
    assert (v1.version, v2.version, v1.created_at) == (1, 2, "2026-01-02T03:04:05Z")
    assert v1.data_hash == train.data_hash() != corpus(range(1)).data_hash()
    # a worker process opens the same directory and loads the version it needs
    loaded, meta = ModelRegistry(DirectoryStore(tmp_path / "models")).load("gpu-failure-risk", 1)
    assert meta == v1
    np.testing.assert_array_equal(loaded.predict(train.features[:50]), model.predict(train.features[:50]))
    stage = risk_stage_from_registry(ModelRegistry(DirectoryStore(tmp_path / "models")), version=2)
    assert stage.model_version == "gpu-failure-risk@2"
    registry.register("not-a-risk-model", {"weights": 1}, data_hash="x", metrics={})
    with pytest.raises(RegistryError, match="not a RiskModel"):
        risk_stage_from_registry(registry, "not-a-risk-model")
    (tmp_path / "models" / "gpu-failure-risk" / "000002" / "model.pkl").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="sha256"):
        registry.load("gpu-failure-risk")
    with pytest.raises(RegistryError, match="no model"):
        registry.load("other")
    with pytest.raises(RegistryError, match="lower-case"):
        registry.register("Bad Name", model, data_hash="x", metrics={})


def test_risk_scoring_stage_flags_a_failing_gpu(trained: Trained) -> None:
    model, _, _ = trained
    ts, met, gpus, _, _ = det_synth.healthy(nodes=2, gpus_per_node=8, steps=200, seed=42)
    met[m.GPU_TEMP][5, 100:] += np.linspace(0, 30, 100)
    met[m.ECC_SBE_VOL_TOTAL][5, 100:] += np.cumsum(np.random.default_rng(0).poisson(3.0, 100))
    stage = RiskScoring(model, "gpu-failure-risk@1", threshold=0.5)
    found = DetectionCycle(stages=[stage]).update(det_synth.frame(ts, met, gpus))
    assert [(f.hostname, f.gpu) for f in found] == [("gpu-node-001", 5)]
    assert found[0].ts > ts[100] and found[0].evidence["model_version"] == "gpu-failure-risk@1"


def test_history_labels_follow_the_ground_truth() -> None:
    ts, met, gpus, _, _ = det_synth.healthy(nodes=1, gpus_per_node=2, steps=100)
    h = history_from_frame(det_synth.frame(ts, met, gpus), {("gpu-node-001", 1): float(ts[60])}, 900.0, "run",
                           every=10, window=20)
    # samples 19, 29, ... 99: GPU 0 always alive and healthy; GPU 1 labelled within 900 s (30 samples)
    # of its failure at sample 60 and absent afterwards
    assert h.labels.tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0]
    assert set(h.groups) == {"run"}
