"""The telemetry port: what every adapter promises, and the one place raw series become a FleetFrame.

Adapters fetch, per metric, a list of series (labels + samples already on the query grid); the
`FrameAssembler` normalises labels (`Hostname`/`hostname`, `exported_pod`/`exported_namespace`),
orders GPUs by (hostname, gpu), merges series of the same GPU (a pod change splits a series) and
builds the aligned `[gpu, time]` arrays. Both adapters share it, so identical data gives identical
frames.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from detectors.frame import FleetFrame, GpuLabels

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]

# The GPU metrics one detection cycle pulls (dcgm-exporter names).
DEFAULT_GPU_METRICS: tuple[str, ...] = (
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_THERMAL_VIOLATION",
    "DCGM_FI_DEV_POWER_VIOLATION",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_EXP_XID_ERRORS_COUNT",
)
# Metrics whose several series per GPU add up (one per XID code) instead of replacing each other.
SUMMED_METRICS: frozenset[str] = frozenset({"DCGM_EXP_XID_ERRORS_COUNT"})


@dataclass(frozen=True)
class NodeSeries:
    """A node-level series: a metric name and the label values that select it; rows keyed by `node`."""

    metric: str
    match: Mapping[str, str] = field(default_factory=dict)

    def promql(self) -> str:
        if not self.match:
            return self.metric
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.match.items()))
        return f"{self.metric}{{{inner}}}"


# Keyed by their PromQL selector, the name the detectors read them by (detectors.metrics.NODE_READY).
DEFAULT_NODE_SERIES: Mapping[str, NodeSeries] = {
    s.promql(): s
    for s in (NodeSeries("kube_node_status_condition", {"condition": "Ready", "status": "true"}),
              NodeSeries("kube_node_spec_unschedulable"))
}


# The fabric's ports as the node exporter's infiniband collector names them ({device, port} labels; the node
# from the scrape's `node`, `Hostname` or `instance` label). Absent when no node exporter runs the collector.
DEFAULT_HCA_METRICS: tuple[str, ...] = (
    "node_infiniband_state_id",
    "node_infiniband_physical_state_id",
    "node_infiniband_rate_bytes_per_second",
    "node_infiniband_link_downed_total",
    "node_infiniband_link_error_recovery_total",
    "node_infiniband_symbol_error_total",
    "node_infiniband_port_errors_received_total",
    "node_infiniband_port_discards_transmitted_total",
    "node_infiniband_port_transmit_wait_total",
    "node_infiniband_port_data_transmitted_bytes_total",
    "node_infiniband_port_data_received_bytes_total",
)


def hca_promql(metrics: Sequence[str]) -> str:
    """One selector for all the fabric metrics (a cycle asks for them in one query)."""
    return '{__name__=~"' + "|".join(metrics) + '"}'


class TelemetrySource(Protocol):
    """Anything that can answer one detection cycle's window for the whole fleet."""

    def frame(
        self,
        start: float,
        end: float,
        step: float,
        metrics: Sequence[str] | None = None,
        node_series: Mapping[str, NodeSeries] | None = None,
    ) -> FleetFrame:
        """Every GPU's metrics on the grid start, start+step, … ≤ end (NaN where absent)."""
        ...


def time_grid(start: float, end: float, step: float) -> FloatArray:
    """The query grid, as Prometheus's query_range evaluates it."""
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(step)):
        raise ValueError("start, end and step must be finite numbers")
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    n = math.floor((end - start) / step + 1e-9) + 1
    return start + step * np.arange(n, dtype=np.float64)


def hostname_of(labels: Mapping[str, str]) -> str:
    """The node a GPU series belongs to, whichever spelling the exporter or relabelling used."""
    for key in ("Hostname", "hostname", "node", "instance"):
        if labels.get(key):
            return labels[key]
    return ""


def node_of(labels: Mapping[str, str]) -> str:
    """The node a node-exporter series belongs to: `node`, `Hostname`, `hostname`, else `instance` less its port."""
    for key in ("node", "Hostname", "hostname"):
        if labels.get(key):
            return labels[key]
    instance = labels.get("instance", "")
    host, sep, port = instance.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() and (":" not in host or host.startswith("[")) else instance


def k8s_label(labels: Mapping[str, str], name: str) -> str:
    """`pod`/`namespace`/`container` of the workload, preferring Prometheus's `exported_` renames."""
    return labels.get(f"exported_{name}") or labels.get(name) or ""


@dataclass
class RawSeries:
    """One series from a source: its labels and its values on the query grid (NaN where absent)."""

    labels: Mapping[str, str]
    values: FloatArray


@dataclass
class FrameAssembler:
    """Builds a FleetFrame from per-metric raw series; records series it had to skip."""

    timestamps: FloatArray
    skipped: list[str] = field(default_factory=list)

    def build(
        self,
        gpu_series: Mapping[str, Sequence[RawSeries]],
        node_series: Mapping[str, Sequence[RawSeries]] | None = None,
        hca_series: Mapping[str, Sequence[RawSeries]] | None = None,
    ) -> FleetFrame:
        keyed: dict[str, dict[tuple[str, int], list[RawSeries]]] = {}
        for metric, series in gpu_series.items():
            per_gpu = keyed.setdefault(metric, {})
            for s in series:
                key = self._gpu_key(metric, s.labels)
                if key is not None:
                    per_gpu.setdefault(key, []).append(s)
        # A GPU's labels come from the first metric that has it, from its most recent series there
        # (seen last, then appeared last: an old series lingers for the lookback after a pod change).
        latest: dict[tuple[str, int], Mapping[str, str]] = {}
        for per_gpu in keyed.values():
            for key, group in per_gpu.items():
                if key not in latest:
                    latest[key] = (
                        group[0].labels
                        if len(group) == 1
                        else max(group, key=lambda s: _recency(s.values)).labels
                    )
        keys = sorted(latest)
        row_of = {k: i for i, k in enumerate(keys)}
        t = len(self.timestamps)
        metrics: dict[str, FloatArray] = {}
        for metric, per_gpu in keyed.items():
            arr = np.full((len(keys), t), np.nan)
            for key, group in per_gpu.items():
                arr[row_of[key]] = group[0].values if len(group) == 1 else self._merge(metric, group, t)
            metrics[metric] = arr
        labels = [latest[k] for k in keys]
        gpus = GpuLabels(
            hostname=tuple(k[0] for k in keys),
            gpu=tuple(k[1] for k in keys),
            uuid=tuple(lab.get("UUID") or lab.get("uuid") or "" for lab in labels),
            model_name=tuple(lab.get("modelName") or "" for lab in labels),
            pod=tuple(k8s_label(lab, "pod") for lab in labels),
            namespace=tuple(k8s_label(lab, "namespace") for lab in labels),
            container=tuple(k8s_label(lab, "container") for lab in labels),
        )
        nodes, node_metrics = self._nodes(node_series or {})
        hcas, hca_metrics = self._hcas(hca_series or {})
        return FleetFrame(self.timestamps, gpus, metrics, nodes, node_metrics, hcas, hca_metrics)

    def _hcas(self, hca_series: Mapping[str, Sequence[RawSeries]]
              ) -> tuple[tuple[tuple[str, str, str], ...], dict[str, FloatArray]]:
        """Rows keyed by (node, device, port); a series without a node or a device is skipped and noted."""
        keyed: dict[str, dict[tuple[str, str, str], RawSeries]] = {}
        for metric, series in hca_series.items():
            for s in series:
                key = (node_of(s.labels), s.labels.get("device", ""), s.labels.get("port", ""))
                if not key[0] or not key[1]:
                    self.skipped.append(f"{metric}{dict(s.labels)}: no node or device label; series skipped")
                    continue
                keyed.setdefault(metric, {})[key] = s
        keys = sorted({k for per in keyed.values() for k in per})
        row_of = {k: i for i, k in enumerate(keys)}
        out: dict[str, FloatArray] = {}
        for metric, per in keyed.items():
            arr = np.full((len(keys), len(self.timestamps)), np.nan)
            for key, s in per.items():
                arr[row_of[key]] = s.values
            out[metric] = arr
        return tuple(keys), out

    def _gpu_key(self, metric: str, labels: Mapping[str, str]) -> tuple[str, int] | None:
        host, gpu = hostname_of(labels), labels.get("gpu", "")
        try:
            index = int(gpu)
        except ValueError:
            index = -1
        if not host or index < 0:
            note = f"{metric}{dict(labels)}: no usable hostname/gpu label; series skipped"
            self.skipped.append(note)
            log.warning("telemetry: %s", note)
            return None
        return host, index

    @staticmethod
    def _merge(metric: str, series: Sequence[RawSeries], t: int) -> FloatArray:
        stack = np.vstack([s.values for s in series])
        if metric in SUMMED_METRICS:
            present = ~np.isnan(stack)
            total = np.where(present, stack, 0.0).sum(axis=0)
            return np.where(present.any(axis=0), total, np.nan)
        # A pod change splits a GPU's series: at each step the series seen last wins.
        order = sorted(range(len(series)), key=lambda i: _recency(series[i].values))
        out = np.full(t, np.nan)
        for i in order:
            v = series[i].values
            out = np.where(np.isnan(v), out, v)
        return out

    def _nodes(
        self, node_series: Mapping[str, Sequence[RawSeries]]
    ) -> tuple[tuple[str, ...], dict[str, FloatArray]]:
        names = sorted({s.labels.get("node", "") for series in node_series.values() for s in series} - {""})
        row_of = {n: i for i, n in enumerate(names)}
        out: dict[str, FloatArray] = {}
        for key, series in node_series.items():
            arr = np.full((len(names), len(self.timestamps)), np.nan)
            for s in series:
                node = s.labels.get("node", "")
                if node:
                    arr[row_of[node]] = np.where(np.isnan(s.values), arr[row_of[node]], s.values)
            out[key] = arr
        return tuple(names), out


def _recency(values: FloatArray) -> tuple[int, int]:
    """(last, first) grid index with a value; (-1, -1) for an empty series."""
    seen = np.flatnonzero(~np.isnan(values))
    return (int(seen[-1]), int(seen[0])) if len(seen) else (-1, -1)
