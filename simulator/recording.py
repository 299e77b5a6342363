"""The twin's telemetry as FleetFrames, in process: one frame per detection cycle with the same metric names,
values (integer fields rounded as the exporter prints them), vanished rows (NaN) and pod labels that the
telemetry connectors would hand over. For long evaluations, where scraping a million samples over HTTP
would measure the parser rather than the detectors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from connectors.telemetry.port import DEFAULT_GPU_METRICS, DEFAULT_NODE_SERIES
from detectors.frame import FleetFrame, FloatArray, GpuLabels
from simulator.exposition import COUNTERS
from simulator.twin import Twin

XID_COUNT = "DCGM_EXP_XID_ERRORS_COUNT"
_READY, _UNSCHEDULABLE = list(DEFAULT_NODE_SERIES)


def _labels(twin: Twin) -> GpuLabels:
    owners = twin.kube.gpu_assignments()
    rows = range(twin.n)
    keys = [(twin.nodes[r // twin.gpus_per_node], r % twin.gpus_per_node) for r in rows]
    pods = [owners.get(k, ("", "", "")) for k in keys]
    return GpuLabels(hostname=tuple(k[0] for k in keys), gpu=tuple(k[1] for k in keys), uuid=twin.uuids,
                     model_name=(twin.spec.model_name,) * twin.n, pod=tuple(p[0] for p in pods),
                     namespace=tuple(p[1] for p in pods), container=tuple(p[2] for p in pods))


def _sample(twin: Twin) -> dict[str, FloatArray]:
    visible = np.zeros(twin.n, dtype=bool)
    visible[twin.visible_rows()] = True
    out: dict[str, FloatArray] = {}
    for counter in COUNTERS:
        if counter.name not in DEFAULT_GPU_METRICS:
            continue
        values = np.asarray(counter.read(twin.physics), dtype=np.float64)
        values = np.round(values) if counter.integer else values.copy()
        values[~visible] = np.nan
        out[counter.name] = values
    if XID_COUNT in DEFAULT_GPU_METRICS:
        xids = np.zeros(twin.n)
        for row, counts in twin.xid_counts().items():
            xids[row] = sum(counts.values())
        xids[~visible] = np.nan
        out[XID_COUNT] = xids
    return out


def cycle_frames(twin: Twin, cycle_steps: int) -> Iterator[FleetFrame]:
    """Run the twin to its end, yielding the frame of every `cycle_steps` steps as a live cycle would see it."""
    if cycle_steps < 1:
        raise ValueError("cycle_steps must be at least 1")
    while not twin.finished:
        times: list[float] = []
        columns: dict[str, list[FloatArray]] = {}
        ready: list[FloatArray] = []
        unschedulable: list[FloatArray] = []
        for _ in range(cycle_steps):
            if twin.finished:
                break
            twin.step()
            times.append(twin.t)
            for name, values in _sample(twin).items():
                columns.setdefault(name, []).append(values)
            ready.append(np.array([1.0 if twin.kube.node_ready(n) else 0.0 for n in twin.nodes]))
            unschedulable.append(np.array([0.0 if twin.kube.node_schedulable(n) else 1.0 for n in twin.nodes]))
        yield FleetFrame(
            timestamps=np.array(times), gpus=_labels(twin),
            metrics={name: np.stack(cols, axis=1) for name, cols in columns.items()},
            nodes=twin.nodes,
            node_metrics={_READY: np.stack(ready, axis=1), _UNSCHEDULABLE: np.stack(unschedulable, axis=1)},
        )
