"""The two baselines gpuops is measured against, and the GPU-hours model all three share.

Both baselines come from a second run of the same scenario with nothing acting on the fleet (the twin alone),
so a fault runs its natural course there: its failure time is the one it would have without gpuops.

- **No automation**: nobody acts within the scenario. Every fault costs its GPUs from the moment it hurts
  the workload until the scenario ends.
- **Threshold alerts**: the classic fixed-threshold alerts of a dcgm-exporter dashboard (any non-application
  XID, GPU temperature at or above 85 °C, a new double-bit ECC error, a row-remap failure, a GPU whose series
  vanish, a node NotReady, framebuffer at or above 98 % full), evaluated on every sample of that run; a human
  mitigates `HUMAN_DELAY_S` (30 min) after the first alert on the fault's GPU (or node). Faults no threshold
  sees (a straggler, a hung job, an overload) are never mitigated within the scenario.

The GPU-hours model (`gpu_hours_lost`): a fault hurts `impact_gpus` GPUs (the whole training job for a GPU
fault on a job, the replica's GPUs for inference and the Deployment's for an overload, the work of every GPU
on the node for a node fault, the job across nodes whose traffic a fabric port carries, the GPU itself when idle)
at a rate `severity` (1 for a hard failure or hang; 1 − slowdown for a straggler; 1 − 1/factor of the
deployment for an overload; 0 for a fault that never touches the work, such as a PCIe replay storm that does
not end with the GPU off the bus) from `impact_start` (the failure time in the untouched run, or the onset for a
degradation) until mitigation or the end of the scenario. A crash also loses the work since the last
checkpoint (half a checkpoint interval on average, training only). Mitigating before the failure costs only a
planned restart (`restart_overhead_s`) of the job's GPUs. gpuops mitigates when the first action that moves
the work off the fault (drain, reschedule, restart, scale, reset, reboot) verifies; an incident gpuops
hands to a human (escalated, rejected or expired) is mitigated like an alert: `HUMAN_DELAY_S` later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.frame import FleetFrame
from simulator.faults import fabric_rows
from simulator.recording import cycle_frames
from simulator.scenario import FABRIC_KINDS, Scenario, TrainingWorkload, node_index
from simulator.twin import APPLICATION_XIDS, Twin

HUMAN_DELAY_S = 1800.0
TEMP_ALERT_C = 85.0
FB_FULL_FRACTION = 0.98
RESTART_OVERHEAD_S = 600.0
DEGRADATIONS = frozenset({"straggler", "hung_job", "inference_overload"})
_READY = "kube_node_status_condition"


@dataclass
class ThresholdAlerts:
    """Fixed thresholds on every sample; remembers the first alert time per GPU row and per node."""

    first_gpu: dict[int, float] = field(default_factory=dict)
    first_node: dict[str, float] = field(default_factory=dict)
    _seen: np.ndarray | None = None
    _dbe: np.ndarray | None = None

    def update(self, frame: FleetFrame) -> None:
        n = frame.n_gpus
        if self._seen is None:
            self._seen, self._dbe = np.zeros(n, dtype=bool), np.full(n, np.nan)
        temp, xid = frame.metric("DCGM_FI_DEV_GPU_TEMP"), frame.metric("DCGM_FI_DEV_XID_ERRORS")
        dbe, remap = frame.metric("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"), frame.metric("DCGM_FI_DEV_ROW_REMAP_FAILURE")
        used, free = frame.metric("DCGM_FI_DEV_FB_USED"), frame.metric("DCGM_FI_DEV_FB_FREE")
        ready = next((v for k, v in frame.node_metrics.items() if k.startswith(_READY)), None)
        for j, ts in enumerate(frame.timestamps.tolist()):
            alert = np.zeros(n, dtype=bool)
            present = ~np.isnan(temp[:, j]) if temp is not None else np.ones(n, dtype=bool)
            alert |= self._seen & ~present  # the GPU's series vanished
            self._seen |= present
            if temp is not None:
                alert |= np.nan_to_num(temp[:, j]) >= TEMP_ALERT_C
            if xid is not None:
                codes = np.nan_to_num(xid[:, j]).astype(int)
                alert |= (codes > 0) & ~np.isin(codes, list(APPLICATION_XIDS))
            if dbe is not None and self._dbe is not None:
                now = dbe[:, j]
                alert |= np.nan_to_num(now) > np.nan_to_num(self._dbe, nan=np.inf)
                self._dbe = np.where(np.isnan(now), self._dbe, now)
            if remap is not None:
                alert |= np.nan_to_num(remap[:, j]) > 0
            if used is not None and free is not None:
                total = np.nan_to_num(used[:, j]) + np.nan_to_num(free[:, j])
                alert |= (total > 0) & (np.nan_to_num(used[:, j]) >= FB_FULL_FRACTION * np.maximum(total, 1))
            for row in np.flatnonzero(alert).tolist():
                self.first_gpu.setdefault(row, ts)
            if ready is not None:
                for i, node in enumerate(frame.nodes):
                    if ready[i, j] == 0:
                        self.first_node.setdefault(node, ts)

    def first_after(self, rows: list[int], nodes: list[str], since: float) -> float | None:
        """The first alert at or after `since` on any of `rows` or `nodes` (alerts are latched: first only)."""
        times = [self.first_gpu[r] for r in rows if r in self.first_gpu and self.first_gpu[r] >= since]
        times += [self.first_node[n] for n in nodes if n in self.first_node and self.first_node[n] >= since]
        return min(times) if times else None


@dataclass(frozen=True)
class Impact:
    """How much a fault hurts, from the untouched run."""

    gpus: int
    severity: float
    impact_start: float       # unix seconds
    failure_at: float | None  # unix seconds, in the untouched run
    crash_s: float            # work lost at a crash, per GPU
    training: bool
    impact_end: float | None = None  # unix seconds: when it stops hurting by itself in the untouched run (a surge)


@dataclass
class BaselineRun:
    """The untouched run: ground truth, threshold alerts, and each fault's impact."""

    truth: dict[str, Any]
    alerts: ThresholdAlerts
    impacts: list[Impact]
    end: float
    gpus_per_node: int


def _impact(twin: Twin, scenario: Scenario, fault: dict[str, Any], spec_params: dict[str, Any]) -> Impact:
    node, gpu = str(fault["node"]), fault.get("gpu")
    rows = _rows(node, gpu, twin.gpus_per_node)
    workloads = {w for r in rows if (w := twin.workload_of(r))}
    # the work that waits on these GPUs: a training job's every GPU, an inference replica's own; an overload
    # is the whole Deployment's
    spread = twin.workload_rows if fault["kind"] == "inference_overload" else twin.lockstep_rows
    held = sorted({x for r in rows for x in spread(r)} if workloads else set(rows))
    fabric = str(fault["kind"]) in FABRIC_KINDS
    if fabric:  # a port carries its GPU's traffic to other nodes: only a job across nodes notices it
        hca_row = node_index(node) * twin.gpus_per_node + int((fault.get("params") or {}).get("hca", 0))
        held = fabric_rows(twin, hca_row)
        workloads = {w for r in held if (w := twin.workload_of(r))}
    specs = [twin.book.specs[w] for w in workloads if w in twin.book.specs]
    training = any(isinstance(s, TrainingWorkload) for s in specs)
    checkpoint = max((s.checkpoint_every for s in specs if isinstance(s, TrainingWorkload)), default=0.0)
    params = {**spec_params, **(fault.get("params") or {})}
    kind = str(fault["kind"])
    severity = 1.0
    if kind == "straggler":
        severity = max(0.0, 1.0 - float(params.get("slowdown", 0.7)))
    elif kind == "inference_overload":  # the share of requests no replica served, at the surge's peak
        peak = float(params.get("peak_demand") or params.get("factor", 2.0))
        severity = max(0.0, 1.0 - 1.0 / max(peak, 1.0))
    if fault.get("hurts_work") is False or (fabric and not held):  # only counters move, or no work crosses
        severity = 0.0
    onset = _ts(fault["onset"])
    failure = _ts(fault["failure_at"]) if fault.get("failure_at") else None
    start = onset if kind in DEGRADATIONS or failure is None else failure
    # a surge ends by itself (users go away): unmet, it costs until then, not until the scenario ends
    ends = _ts(fault["cleared_at"]) if kind == "inference_overload" and fault.get("cleared_at") else None
    return Impact(gpus=len(held), severity=severity, impact_start=start, failure_at=failure,
                  crash_s=checkpoint / 2 if training and failure is not None else 0.0, training=training,
                  impact_end=ends)


def baseline_run(scenario: Scenario, cycle_steps: int = 8) -> BaselineRun:
    """Step the scenario with nobody acting, recording threshold alerts and each fault's impact."""
    twin = Twin(scenario)
    probe = Twin(scenario)  # who holds which GPUs at t=0, before any fault moved work around
    alerts = ThresholdAlerts()
    for frame in cycle_frames(twin, cycle_steps):
        alerts.update(frame)
    truth = twin.truth()
    impacts = [_impact(probe, scenario, f, dict(spec.params))
               for f, spec in zip(truth["faults"], [a.spec for a in twin.faults], strict=True)]
    return BaselineRun(truth=truth, alerts=alerts, impacts=impacts, end=twin.end, gpus_per_node=twin.gpus_per_node)


def gpu_hours_lost(impact: Impact, mitigated_at: float | None, end: float) -> float:
    """GPU-hours a fault costs when mitigated at `mitigated_at` (None: not within the scenario)."""
    if impact.impact_start >= end:
        return 0.0
    stop = end if mitigated_at is None else min(mitigated_at, end)
    if impact.impact_end is not None:
        stop = min(stop, impact.impact_end)
    if impact.severity <= 0:  # a fault that never hurts the work: moving the work is the only cost
        return impact.gpus * (RESTART_OVERHEAD_S if impact.training and mitigated_at is not None
                              and mitigated_at < end else 0.0) / 3600.0
    if mitigated_at is not None and stop < impact.impact_start:
        # moved before it hurt: a planned restart of the job, no crash
        return impact.gpus * (RESTART_OVERHEAD_S if impact.training else 0.0) / 3600.0
    crashed = impact.failure_at is not None and impact.failure_at < stop
    seconds = impact.severity * max(0.0, stop - impact.impact_start) + (impact.crash_s if crashed else 0.0)
    return impact.gpus * seconds / 3600.0


def threshold_mitigation(run: BaselineRun, index: int) -> float | None:
    """When the threshold-alert baseline mitigates fault `index`: `HUMAN_DELAY_S` after its first alert."""
    fault = run.truth["faults"][index]
    node, gpu = str(fault["node"]), fault.get("gpu")
    rows = _rows(node, gpu, run.gpus_per_node)
    first = run.alerts.first_after(rows, [node], _ts(fault["onset"]))
    return None if first is None else first + HUMAN_DELAY_S


INCIDENT_MARGIN_S = 1800.0  # an incident up to 30 min after a fault ends still belongs to it


def fault_window(fault: dict[str, Any], scenario: Scenario) -> tuple[float, float]:
    """When a fault is under way, from its truth: from its onset (one step early) until it cleared, else until
    it failed; a fault that neither failed nor cleared (a cooling loss on a GPU too idle to overheat, a PCIe
    replay storm that never takes the GPU off the bus) is under way until the scenario ends."""
    start = _ts(fault["onset"]) - scenario.step
    if fault.get("cleared_at"):
        end = _ts(fault["cleared_at"])
    elif fault.get("failure_at"):
        end = _ts(fault["failure_at"])
    else:
        end = scenario.start + scenario.duration
    return start, max(end, start)


def _rows(node: str, gpu: int | None, per_node: int) -> list[int]:
    base = node_index(node) * per_node
    return list(range(base, base + per_node)) if gpu is None else [base + int(gpu)]


def _ts(value: Any) -> float:
    from datetime import UTC, datetime

    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).timestamp()
