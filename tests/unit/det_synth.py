"""Small synthetic fleets for the detector tests: healthy telemetry with faults written in by hand."""

from __future__ import annotations

import numpy as np

from detectors import metrics as m
from detectors.frame import FleetFrame, FloatArray, GpuLabels

T0 = 1_700_000_000.0


def labels(nodes: int, gpus_per_node: int, jobs: int = 1) -> GpuLabels:
    """Hosts gpu-node-001.., each GPU running a pod of one of `jobs` jobs (job j's pods: train-j-worker-N)."""
    host, gpu, uuid, pod, ns = [], [], [], [], []
    n = nodes * gpus_per_node
    for i in range(n):
        node, g = divmod(i, gpus_per_node)
        job = i * jobs // n
        host.append(f"gpu-node-{node + 1:03d}")
        gpu.append(g)
        uuid.append(f"GPU-{i:08x}")
        pod.append(f"train-{job}-worker-{node}")
        ns.append("ml")
    return GpuLabels(hostname=tuple(host), gpu=tuple(gpu), uuid=tuple(uuid),
                     model_name=("NVIDIA H100 80GB HBM3",) * n, pod=tuple(pod), namespace=tuple(ns))


def healthy(nodes: int = 4, gpus_per_node: int = 8, steps: int = 240, step_s: float = 30.0,
            seed: int = 0, jobs: int = 1) -> tuple[
                FloatArray, dict[str, FloatArray], GpuLabels, tuple[str, ...], dict[str, FloatArray]]:
    """Timestamps, GPU metrics, labels, node names and node metrics of a busy, healthy fleet."""
    rng = np.random.default_rng(seed)
    n = nodes * gpus_per_node
    ts = T0 + step_s * np.arange(steps)
    shape = (n, steps)
    util = np.clip(95 + rng.normal(0, 2, shape), 0, 100)
    metrics = {
        m.GPU_TEMP: 65 + rng.normal(0, 1.0, shape),
        m.MEMORY_TEMP: 70 + rng.normal(0, 1.0, shape),
        m.POWER_USAGE: 600 + rng.normal(0, 10, shape),
        m.SM_CLOCK: 1980 + rng.normal(0, 5, shape),
        m.GPU_UTIL: util,
        m.GR_ENGINE_ACTIVE: util / 100.0,
        m.FB_USED: 60_000 + rng.normal(0, 50, shape),
        m.FB_FREE: 21_000 + rng.normal(0, 50, shape),
        m.XID_ERRORS: np.zeros(shape),
        m.ECC_DBE_VOL_TOTAL: np.zeros(shape),
        m.ECC_SBE_VOL_TOTAL: np.cumsum(rng.poisson(0.05, shape), axis=1).astype(float),
        m.UNCORRECTABLE_REMAPPED_ROWS: np.zeros(shape),
        m.ROW_REMAP_FAILURE: np.zeros(shape),
        m.NVLINK_CRC_FLIT_ERRORS: np.cumsum(rng.poisson(0.2, shape), axis=1).astype(float),
        m.PCIE_REPLAY_COUNTER: np.cumsum(rng.poisson(0.1, shape), axis=1).astype(float),
    }
    node_names = tuple(f"gpu-node-{i + 1:03d}" for i in range(nodes))
    node_metrics = {m.NODE_READY: np.ones((nodes, steps))}
    return ts, metrics, labels(nodes, gpus_per_node, jobs), node_names, node_metrics


def frame(ts: FloatArray, metrics: dict[str, FloatArray], gpus: GpuLabels, nodes: tuple[str, ...] = (),
          node_metrics: dict[str, FloatArray] | None = None) -> FleetFrame:
    return FleetFrame(timestamps=ts, gpus=gpus, metrics=metrics, nodes=nodes, node_metrics=node_metrics or {})


def chunks(f: FleetFrame, size: int, overlap: int = 0) -> list[FleetFrame]:
    """The frame cut into consecutive windows of `size` steps, each repeating `overlap` earlier steps."""
    out = []
    start = 0
    while start < f.n_steps:
        lo = max(0, start - overlap)
        hi = min(f.n_steps, start + size)
        keep = np.zeros(f.n_steps, dtype=bool)
        keep[lo:hi] = True
        out.append(FleetFrame(timestamps=f.timestamps[keep], gpus=f.gpus,
                              metrics={k: v[:, keep] for k, v in f.metrics.items()}, nodes=f.nodes,
                              node_metrics={k: v[:, keep] for k, v in f.node_metrics.items()}))
        start = hi
    return out
