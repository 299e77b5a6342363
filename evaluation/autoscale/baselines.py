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
        # The highest count over the last `window` cycles, without scanning them every cycle (a keep-alive of a
        # week is 40,321 cycles): the cycles are cut into blocks of `window`; the window ending now is the
        # current block so far (its running maximum) and the tail of the previous block (its maxima from each
        # position to the block's end, computed once when the block filled). Before the first cycle every
        # count is zero.
        window = math.floor(cooldown_s / period_s) + 1
        self._block = np.zeros((window, n_models), dtype=np.int64)
        self._tail_max = np.zeros((window, n_models), dtype=np.int64)
        self._running = np.zeros(n_models, dtype=np.int64)
        self._slot = 0

    def decide(self, observation: CycleObservation) -> IntArray:
        window = self._block.shape[0]
        self._block[self._slot] = observation.in_flight
        self._running = self._block[0].copy() if self._slot == 0 else np.maximum(self._running,
                                                                                 self._block[self._slot])
        highest = self._running if self._slot + 1 == window else np.maximum(self._running,
                                                                            self._tail_max[self._slot + 1])
        self._slot += 1
        if self._slot == window:
            self._tail_max = np.maximum.accumulate(self._block[::-1], axis=0)[::-1].copy()
            self._slot = 0
        desired: IntArray = np.maximum(highest, self.minimum)
        return desired


def warm_one(n_models: int, *, period_s: float = 15.0, cooldown_s: float = 300.0) -> Reactive:
    """One replica of every model always up, reactive above it."""
    return Reactive(n_models, period_s=period_s, cooldown_s=cooldown_s, minimum=1, name="warm-1")
