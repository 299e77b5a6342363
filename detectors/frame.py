"""The FleetFrame: one detection cycle's telemetry for the whole fleet as aligned arrays.

Connectors build it (one query per metric), detectors read it. Pure data: numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GpuLabels:
    """The label index of the GPU rows, one entry per row (all tuples have the same length)."""

    hostname: tuple[str, ...]
    gpu: tuple[int, ...]
    uuid: tuple[str, ...]
    model_name: tuple[str, ...]
    pod: tuple[str, ...] = ()
    namespace: tuple[str, ...] = ()
    container: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.hostname)
        for name in ("gpu", "uuid", "model_name"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"GpuLabels.{name} has {len(getattr(self, name))} rows, expected {n}")
        for name in ("pod", "namespace", "container"):
            value = getattr(self, name)
            if value and len(value) != n:
                raise ValueError(f"GpuLabels.{name} has {len(value)} rows, expected {n} or none")
            if not value:
                object.__setattr__(self, name, ("",) * n)

    def __len__(self) -> int:
        return len(self.hostname)

    def key(self, row: int) -> tuple[str, int]:
        """(hostname, gpu index) of a row: the identity used across cycles."""
        return self.hostname[row], self.gpu[row]


@dataclass(frozen=True)
class FleetFrame:
    """Telemetry of one window: `metrics[name]` is float64 `[gpu, time]`, NaN where a sample is missing.

    `node_metrics[name]` is float64 `[node, time]` for node-level series (kube-state-metrics),
    rows in the order of `nodes`; `hca_metrics[name]` is `[port, time]` for the fabric's ports (the node
    exporter's `node_infiniband_*`), rows in the order of `hcas`. A metric absent from the mapping was not
    available at all (no infiniband collector: no `hcas`, and fabric features are off).
    """

    timestamps: FloatArray
    gpus: GpuLabels
    metrics: Mapping[str, FloatArray] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()
    node_metrics: Mapping[str, FloatArray] = field(default_factory=dict)
    hcas: tuple[tuple[str, str, str], ...] = ()  # (hostname, device, port) of each fabric port row
    hca_metrics: Mapping[str, FloatArray] = field(default_factory=dict)  # node exporter's node_infiniband_*

    def __post_init__(self) -> None:
        t = self.timestamps.shape[0]
        if self.timestamps.ndim != 1:
            raise ValueError("FleetFrame.timestamps must be one-dimensional")
        if t > 1 and not bool(np.all(np.diff(self.timestamps) > 0)):
            raise ValueError("FleetFrame.timestamps must be strictly increasing")
        for name, arr in self.metrics.items():
            if arr.shape != (len(self.gpus), t):
                raise ValueError(f"metric {name} has shape {arr.shape}, expected {(len(self.gpus), t)}")
        for name, arr in self.node_metrics.items():
            if arr.shape != (len(self.nodes), t):
                raise ValueError(f"node metric {name} has shape {arr.shape}, expected {(len(self.nodes), t)}")
        for name, arr in self.hca_metrics.items():
            if arr.shape != (len(self.hcas), t):
                raise ValueError(f"HCA metric {name} has shape {arr.shape}, expected {(len(self.hcas), t)}")

    @property
    def n_gpus(self) -> int:
        return len(self.gpus)

    @property
    def n_steps(self) -> int:
        return int(self.timestamps.shape[0])

    def metric(self, name: str) -> FloatArray | None:
        """The `[gpu, time]` array of a metric, or None when the series is absent."""
        return self.metrics.get(name)

    def rows(self, keep: npt.NDArray[np.bool_]) -> FleetFrame:
        """The frame restricted to the GPU rows where `keep` is true (nodes restricted to those rows' hosts)."""
        idx = np.flatnonzero(keep)
        pick = [int(i) for i in idx]
        gpus = GpuLabels(
            hostname=tuple(self.gpus.hostname[i] for i in pick), gpu=tuple(self.gpus.gpu[i] for i in pick),
            uuid=tuple(self.gpus.uuid[i] for i in pick), model_name=tuple(self.gpus.model_name[i] for i in pick),
            pod=tuple(self.gpus.pod[i] for i in pick), namespace=tuple(self.gpus.namespace[i] for i in pick),
            container=tuple(self.gpus.container[i] for i in pick),
        )
        hosts = set(gpus.hostname)
        node_idx = [i for i, n in enumerate(self.nodes) if n in hosts]
        hca_idx = [i for i, h in enumerate(self.hcas) if h[0] in hosts]
        return FleetFrame(
            timestamps=self.timestamps, gpus=gpus, metrics={k: v[idx] for k, v in self.metrics.items()},
            nodes=tuple(self.nodes[i] for i in node_idx),
            node_metrics={k: v[node_idx] for k, v in self.node_metrics.items()},
            hcas=tuple(self.hcas[i] for i in hca_idx),
            hca_metrics={k: v[hca_idx] for k, v in self.hca_metrics.items()},
        )

    def until(self, ts: float) -> FleetFrame:
        """The same frame cut to samples at or before `ts` (used to prove causality)."""
        keep = self.timestamps <= ts
        return FleetFrame(
            timestamps=self.timestamps[keep],
            gpus=self.gpus,
            metrics={k: v[:, keep] for k, v in self.metrics.items()},
            nodes=self.nodes,
            node_metrics={k: v[:, keep] for k, v in self.node_metrics.items()},
            hcas=self.hcas,
            hca_metrics={k: v[:, keep] for k, v in self.hca_metrics.items()},
        )
