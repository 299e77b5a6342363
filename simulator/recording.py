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
from simulator.fabric import exported_samples
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


class FrameRecorder:
    """Samples the twin after each step and hands the samples over as one FleetFrame on demand, so a caller
    that also steps the twin elsewhere (a runbook waiting in simulated time) loses no sample."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self._times: list[float] = []
        self._columns: dict[str, list[FloatArray]] = {}
        self._ready: list[FloatArray] = []
        self._unschedulable: list[FloatArray] = []
        self._hcas: list[dict[str, FloatArray]] = []

    @property
    def pending(self) -> int:
        """Samples recorded since the last frame."""
        return len(self._times)

    def step(self) -> None:
        """Advance the twin one step and sample it."""
        self.twin.step()
        self.record()

    def record(self) -> None:
        """Sample the twin as it stands now."""
        twin = self.twin
        self._times.append(twin.t)
        for name, values in _sample(twin).items():
            self._columns.setdefault(name, []).append(values)
        joining = twin.healthy.joining  # not in the cluster yet: kube-state-metrics has no series for them
        self._ready.append(np.array([np.nan if n in joining else 1.0 if twin.kube.node_ready(n) else 0.0
                                     for n in twin.nodes]))
        self._unschedulable.append(np.array([np.nan if n in joining else 0.0 if twin.kube.node_schedulable(n)
                                             else 1.0 for n in twin.nodes]))
        self._hcas.append(exported_samples(twin.fabric, twin.nodes, twin.node_up)[1])

    def frame(self) -> FleetFrame:
        """The samples recorded since the last frame, as a FleetFrame (ValueError when there are none)."""
        if not self._times:
            raise ValueError("no sample recorded since the last frame")
        twin = self.twin
        frame = FleetFrame(
            timestamps=np.array(self._times), gpus=_labels(twin),
            metrics={name: np.stack(cols, axis=1) for name, cols in self._columns.items()},
            nodes=twin.nodes,
            node_metrics={_READY: np.stack(self._ready, axis=1),
                          _UNSCHEDULABLE: np.stack(self._unschedulable, axis=1)},
            hcas=exported_samples(twin.fabric, twin.nodes)[0],
            hca_metrics={name: np.stack([s[name] for s in self._hcas], axis=1) for name in self._hcas[0]},
        )
        self._times, self._columns, self._ready, self._unschedulable, self._hcas = [], {}, [], [], []
        return frame


def cycle_frames(twin: Twin, cycle_steps: int) -> Iterator[FleetFrame]:
    """Run the twin to its end, yielding the frame of every `cycle_steps` steps as a live cycle would see it."""
    if cycle_steps < 1:
        raise ValueError("cycle_steps must be at least 1")
    recorder = FrameRecorder(twin)
    while not twin.finished:
        for _ in range(cycle_steps):
            if twin.finished:
                break
            recorder.step()
        yield recorder.frame()
