"""The baselines gpuops' scaler is measured against."""

from __future__ import annotations

import math

import numpy as np

from gpuops.autoscale.observation import CycleObservation
from simulator.request_trace import IntArray


class Reactive:
    """KEDA-style: every cycle, one replica per request in flight (running or waiting), scaling up at once and
    down only to the highest count wanted over the last `cooldown_s` (so a model without work for that long
    scales to `minimum`)."""

    def __init__(self, n_models: int, *, period_s: float = 15.0, cooldown_s: float = 300.0, minimum: int = 0,
                 name: str = "reactive") -> None:
        self.name = name
        self.minimum = minimum
        self._history = np.zeros((math.floor(cooldown_s / period_s) + 1, n_models), dtype=np.int64)
        self._slot = 0

    def decide(self, observation: CycleObservation) -> IntArray:
        self._history[self._slot] = observation.in_flight
        self._slot = (self._slot + 1) % self._history.shape[0]
        desired: IntArray = np.maximum(self._history.max(axis=0), self.minimum)
        return desired


def warm_one(n_models: int, *, period_s: float = 15.0, cooldown_s: float = 300.0) -> Reactive:
    """One replica of every model always up, reactive above it."""
    return Reactive(n_models, period_s=period_s, cooldown_s=cooldown_s, minimum=1, name="warm-1")
