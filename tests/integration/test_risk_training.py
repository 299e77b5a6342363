"""The risk model learns from the twin's history and is validated on seeds it never saw; the registry keeps the
version with its data hash and metrics, and a worker's stage loads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.registry import ModelRegistry
from detectors.risk import RISK_MODEL_NAME, risk_stage_from_registry
from evaluation.risk_training import train_on_twin
from gpuops.model_store import DirectoryStore
from simulator.scenario import scenario_from_dict

SCENARIO = scenario_from_dict({
    "name": "risk-train", "seed": 1, "fleet": {"nodes": 4, "gpus_per_node": 4, "gpu_model": "H100 80GB"},
    "duration": "2h", "step": "30s",
    "faults": [{"kind": "thermal_runaway", "node": "gpu-node-002", "gpu": 1, "at": "30m"},
               {"kind": "row_remap_exhaustion", "node": "gpu-node-003", "gpu": 2, "at": "20m"}],
    "approval": "auto_approve"})


def test_trained_on_some_seeds_validated_on_others_and_registered(tmp_path: Path) -> None:
    registry = ModelRegistry(DirectoryStore(tmp_path / "models"))
    result = train_on_twin([SCENARIO], train_seeds=[1, 2], validation_seeds=[3], horizon_s=3600.0,
                           registry=registry)
    assert result.version.version == 1 and len(result.version.data_hash) == 64
    assert result.validation_rows > 0 and result.metrics["roc_auc"] is not None
    assert result.metrics["ece"] is not None and 0.0 <= result.metrics["ece"] <= 1.0
    (listed,) = registry.versions(RISK_MODEL_NAME)
    assert listed.metrics == result.metrics
    stage = risk_stage_from_registry(registry)
    assert stage.model_version == listed.tag


def test_validation_on_a_training_seed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seeds must differ"):
        train_on_twin([SCENARIO], train_seeds=[1, 2], validation_seeds=[2], horizon_s=3600.0,
                      registry=ModelRegistry(DirectoryStore(tmp_path)))


def test_workers_load_the_registered_model_into_new_cycles(tmp_path: Path) -> None:
    from gpuops.config import Settings
    from gpuops.wiring import bootstrap

    registry = ModelRegistry(DirectoryStore(tmp_path / "models"))
    without = bootstrap(Settings(database_url="sqlite://", model_dir=str(tmp_path / "models")))
    assert not any(getattr(s, "name", "") == "risk" for s in without.new_detection_cycle().stages)
    train_on_twin([SCENARIO], train_seeds=[1], validation_seeds=[3], horizon_s=3600.0, registry=registry)
    stages = without.new_detection_cycle().stages
    assert [s.model_version for s in stages if getattr(s, "name", "") == "risk"] == [f"{RISK_MODEL_NAME}@1"]
    without.close()
