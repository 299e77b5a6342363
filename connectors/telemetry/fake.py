"""An in-memory telemetry source for tests: frames cut from arrays handed to it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from connectors.telemetry.errors import TelemetryError
from connectors.telemetry.port import NodeSeries, time_grid
from detectors.frame import FleetFrame, FloatArray, GpuLabels


class InMemoryTelemetry:
    """Serves windows of one fixed FleetFrame (nearest earlier sample on the grid); can be told to fail."""

    def __init__(self, data: FleetFrame, lookback_s: float = 300.0) -> None:
        self.data = data
        self.lookback_s = lookback_s
        self.fail_with: TelemetryError | None = None
        self.calls: list[tuple[float, float, float]] = []

    def frame(
        self,
        start: float,
        end: float,
        step: float,
        metrics: Sequence[str] | None = None,
        node_series: Mapping[str, NodeSeries] | None = None,
    ) -> FleetFrame:
        self.calls.append((start, end, step))
        if self.fail_with is not None:
            raise self.fail_with
        grid = time_grid(start, end, step)
        src = self.data.timestamps
        idx = np.searchsorted(src, grid, side="right") - 1
        ok = (idx >= 0) & (grid - src[np.maximum(idx, 0)] <= self.lookback_s)

        def cut(arr: FloatArray) -> FloatArray:
            out = np.full((arr.shape[0], len(grid)), np.nan)
            out[:, ok] = arr[:, idx[ok]]
            return out

        names = metrics if metrics is not None else list(self.data.metrics)
        picked = {m: cut(self.data.metrics[m]) for m in names if m in self.data.metrics}
        keys = node_series.keys() if node_series is not None else self.data.node_metrics.keys()
        nodes = {k: cut(self.data.node_metrics[k]) for k in keys if k in self.data.node_metrics}
        hcas = {k: cut(v) for k, v in self.data.hca_metrics.items()}
        return FleetFrame(grid, GpuLabels(**vars(self.data.gpus)), picked, self.data.nodes, nodes,
                          self.data.hcas, hcas)
