"""Training the learned risk model on the twin's history: run scenarios with training seeds, label each
GPU-time by whether that GPU failed within the horizon, validate on seeds the model never saw, and register the
model with its data hash and validation metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from detectors.registry import ModelRegistry, ModelVersion
from detectors.risk import RISK_MODEL_NAME, LabelledHistory, concat, history_from_frame, train_risk_model
from simulator.recording import cycle_frames
from simulator.scenario import Scenario
from simulator.twin import Twin

WHOLE_RUN = 10**9  # cycle_frames in one piece


def _ts(value: Any) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def run_history(scenario: Scenario, horizon_s: float, every: int = 10) -> LabelledHistory:
    """Labelled rows of one twin run: a GPU's failure is the failure time of a fault on it."""
    twin = Twin(scenario)
    frame = next(cycle_frames(twin, WHOLE_RUN))
    failure_at = {(str(f["node"]), int(f["gpu"])): _ts(f["failure_at"])
                  for f in twin.truth()["faults"] if f.get("gpu") is not None and f.get("failure_at")}
    return history_from_frame(frame, failure_at, horizon_s, group=f"{scenario.name}#{scenario.seed}", every=every)


@dataclass(frozen=True)
class TrainingResult:
    version: ModelVersion
    metrics: dict[str, float | None]
    train_rows: int
    validation_rows: int


def train_on_twin(scenarios: Sequence[Scenario], *, train_seeds: Sequence[int], validation_seeds: Sequence[int],
                  horizon_s: float, registry: ModelRegistry) -> TrainingResult:
    """Train on `train_seeds`, validate on `validation_seeds` (disjoint), register the model."""
    if set(train_seeds) & set(validation_seeds):
        raise ValueError("training and validation seeds must differ: validation is on runs the model never saw")

    def histories(seeds: Sequence[int]) -> LabelledHistory:
        return concat([run_history(s.model_copy(update={"seed": seed}), horizon_s)
                       for s in scenarios for seed in seeds])

    train, validation = histories(train_seeds), histories(validation_seeds)
    model = train_risk_model(train, validation)
    version = registry.register(RISK_MODEL_NAME, model, data_hash=train.data_hash(), metrics=dict(model.metrics),
                                params={"scenarios": [s.name for s in scenarios], "train_seeds": list(train_seeds),
                                        "validation_seeds": list(validation_seeds), "horizon_s": horizon_s})
    return TrainingResult(version, dict(model.metrics), int(train.labels.size), int(validation.labels.size))
