"""Evidence kept with an incident: when it opens and after each executed action, the node's telemetry (the
faulty GPU, its node peers and the GPUs of its job elsewhere, downsampled to a bounded size) and the workload on
the node are stored with it. The incident page draws from these snapshots and asks the live source only for what
came after the last one, so the charts outlive the source's retention and the blast radius outlives the pods."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.kubernetes import ClusterError, ClusterPort
from connectors.telemetry import TelemetryError, TelemetrySource
from detectors.frame import FleetFrame
from domain.jobs import job_of
from gpuops.errors import ConfigError
from gpuops.store.models import Action, Incident, IncidentEvidence
from runbooks.blast import Workload, read_workload
from runbooks.settings import RunbookSettings

log = logging.getLogger(__name__)

BASE_METRICS = ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE")
FAMILY_METRICS: dict[str, tuple[str, ...]] = {
    "xid": ("DCGM_FI_DEV_XID_ERRORS",),
    "gpu_lost": ("DCGM_FI_DEV_XID_ERRORS",),
    "ecc": ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"),
    "row_remap": ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE"),
    "thermal": ("DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_THERMAL_VIOLATION"),
    "nvlink": ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",),
    "pcie": ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER",),
    "power": ("DCGM_FI_DEV_SM_CLOCK",),
    "straggler": ("DCGM_FI_PROF_GR_ENGINE_ACTIVE",),
    "hung_job": ("DCGM_FI_PROF_GR_ENGINE_ACTIVE",),
    "memory_leak": ("DCGM_FI_DEV_FB_USED",),
    "overload": ("DCGM_FI_DEV_FB_USED",),
}
# Counters and codes whose every non-zero sample matters: a bucket keeps its largest value, never the mean.
PEAK_METRICS = frozenset({"DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ROW_REMAP_FAILURE",
                          "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_THERMAL_VIOLATION"})
BEFORE = timedelta(minutes=30)
MAX_POINTS = 180      # per series and snapshot
MAX_JOB_PEERS = 8     # GPUs of the job on other nodes kept beside the node's own
OPENED = "opened"


def metrics_of(family: str) -> tuple[str, ...]:
    return (*FAMILY_METRICS.get(family, ()), *BASE_METRICS)


def action_moment(action_id: int) -> str:
    return f"action-{action_id}"


def downsample(timestamps: Sequence[float], values: Sequence[float], max_points: int,
               peak: bool = False) -> tuple[list[float], list[float | None]]:
    """At most `max_points` samples: consecutive buckets averaged (or their largest value kept, for `peak`
    series), each stamped with its last sample's time; a bucket without a sample is None."""
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    t = np.asarray(timestamps, dtype=float)
    v = np.asarray(values, dtype=float)
    if t.shape != v.shape:
        raise ValueError(f"{t.shape[0]} timestamps but {v.shape[0]} values")
    if t.size == 0:
        return [], []
    edges = np.linspace(0, t.size, min(max_points, t.size) + 1).round().astype(int)
    out_t: list[float] = []
    out_v: list[float | None] = []
    for lo, hi in itertools.pairwise(int(e) for e in edges):
        if hi <= lo:
            continue
        chunk = v[lo:hi][np.isfinite(v[lo:hi])]
        out_t.append(float(t[hi - 1]))
        out_v.append(None if chunk.size == 0 else _round(float(chunk.max() if peak else chunk.mean())))
    return out_t, out_v


def _round(value: float) -> float:
    return float(f"{value:.5g}")


@dataclass(frozen=True)
class GpuRow:
    row: int
    role: str  # faulty | node | job


def rows_to_keep(frame: FleetFrame, hostname: str, gpu: int | None) -> list[GpuRow]:
    """The faulty GPU (or every GPU of a node-level incident), its node peers, and up to MAX_JOB_PEERS GPUs on
    other nodes running the same job as the faulty GPU."""
    labels = frame.gpus
    pods = labels.pod or ("",) * len(labels.hostname)
    spaces = labels.namespace or ("",) * len(labels.hostname)
    kept: list[GpuRow] = []
    jobs: set[str] = set()
    for i, (host, index) in enumerate(zip(labels.hostname, labels.gpu, strict=True)):
        if host != hostname:
            continue
        faulty = gpu is None or index == gpu
        kept.append(GpuRow(i, "faulty" if faulty else "node"))
        if faulty and pods[i] and (job := job_of(pods[i], spaces[i])):
            jobs.add(job)
    peers = [GpuRow(i, "job") for i, host in enumerate(labels.hostname)
             if host != hostname and pods[i] and job_of(pods[i], spaces[i]) in jobs]
    return kept + peers[:MAX_JOB_PEERS]


def telemetry_snapshot(frame: FleetFrame, hostname: str, gpu: int | None, metrics: Sequence[str]) -> dict[str, Any]:
    """The kept GPUs' series, downsampled: {"t": [...], "gpus": {"host/gpu": {"role", "pod", "metrics"}}}."""
    stamps = [float(x) for x in frame.timestamps]
    rows = rows_to_keep(frame, hostname, gpu)
    pods = frame.gpus.pod or ("",) * len(frame.gpus.hostname)
    spaces = frame.gpus.namespace or ("",) * len(frame.gpus.hostname)
    gpus: dict[str, Any] = {}
    sampled_t: list[float] = []
    for kept in rows:
        series: dict[str, list[float | None]] = {}
        for name in metrics:
            data = frame.metric(name)
            if data is None or not np.isfinite(data[kept.row]).any():
                continue
            sampled_t, series[name] = downsample(stamps, data[kept.row], MAX_POINTS, name in PEAK_METRICS)
        if series:
            key = f"{frame.gpus.hostname[kept.row]}/{frame.gpus.gpu[kept.row]}"
            gpus[key] = {"role": kept.role, "pod": pods[kept.row], "namespace": spaces[kept.row],
                         "metrics": series}
    if not sampled_t and stamps:
        sampled_t = downsample(stamps, [math.nan] * len(stamps), MAX_POINTS)[0]
    return {"t": sampled_t, "gpus": gpus}


def workload_snapshot(cluster: ClusterPort, hostname: str, settings: RunbookSettings,
                      seen_pods: Sequence[str] = ()) -> Workload:
    node = cluster.get_node(hostname)
    others = {n.name: cluster.list_pods(n.name) for n in cluster.list_nodes() if n.name != hostname}
    return read_workload(node, cluster.list_pods(hostname), others, settings, seen_pods)


def seen_pods(series: Mapping[str, Any], hostname: str) -> list[str]:
    """The pods ("namespace/name") the node's GPUs reported in a telemetry snapshot."""
    found = {f"{info.get('namespace') or ''}/{info['pod']}" for key, info in (series.get("gpus") or {}).items()
             if key.rpartition("/")[0] == hostname and info.get("pod")}
    return sorted(found)


def snapshots(session: Session, incident_id: int) -> list[IncidentEvidence]:
    """An incident's snapshots, oldest window first."""
    return list(session.scalars(select(IncidentEvidence).where(IncidentEvidence.incident_id == incident_id)
                                .order_by(IncidentEvidence.window_end, IncidentEvidence.id)))


def missing_moments(session: Session, incident: Incident) -> list[str]:
    """The moments of `incident` with no snapshot yet: its opening, and each action that has run."""
    have = {e.moment for e in snapshots(session, incident.id)}
    wanted = [OPENED] + [action_moment(a.id) for a in incident.actions if a.executed_at is not None]
    return [m for m in wanted if m not in have]


@dataclass
class EvidenceSources:
    """Where snapshots are read from; either may be absent (a detection-only install has no cluster)."""

    telemetry: TelemetrySource | None
    cluster: ClusterPort | None
    runbook_settings: RunbookSettings
    step_s: float


def take_snapshot(session: Session, *, incident: Incident, moment: str, sources: EvidenceSources,
                  now: datetime) -> IncidentEvidence | None:
    """Store the snapshot of `moment` (idempotent: an existing one is returned). Its window starts where the
    previous snapshot's ended (BEFORE the opening for the first), so the snapshots tile the incident's time."""
    if not incident.hostname:
        return None
    existing = session.scalars(select(IncidentEvidence).where(IncidentEvidence.incident_id == incident.id,
                                                              IncidentEvidence.moment == moment)).first()
    if existing is not None:
        return existing
    earlier = snapshots(session, incident.id)
    start = earlier[-1].window_end if earlier else incident.opened_at - BEFORE
    end = max(now, start + timedelta(seconds=sources.step_s))
    series: dict[str, Any] = {}
    if sources.telemetry is not None:
        step = max(sources.step_s, (end - start).total_seconds() / (4 * MAX_POINTS))
        try:
            frame = sources.telemetry.frame(start.timestamp(), end.timestamp(), step,
                                            metrics=list(metrics_of(incident.family)), node_series={})
            series = telemetry_snapshot(frame, incident.hostname, incident.gpu, metrics_of(incident.family))
        except (ConfigError, TelemetryError, ValueError) as exc:
            series = {"error": str(exc)[:300]}
    workload: dict[str, Any] = {}
    if sources.cluster is not None:
        try:
            workload = workload_snapshot(sources.cluster, incident.hostname, sources.runbook_settings,
                                         seen_pods(series, incident.hostname)).to_json()
        except (ClusterError, ConfigError) as exc:
            workload = {"error": str(exc)[:300]}
    evidence = IncidentEvidence(incident_id=incident.id, moment=moment, taken_at=now, window_start=start,
                                window_end=end, series=series, workload=workload)
    session.add(evidence)
    session.flush()
    return evidence


def keep_evidence(session: Session, *, incident_id: int, sources: EvidenceSources, now: datetime) -> list[str]:
    """Take every snapshot `incident_id` lacks; returns the moments taken."""
    incident = session.get(Incident, incident_id)
    if incident is None or not incident.hostname:
        return []
    taken = []
    for moment in missing_moments(session, incident):
        if take_snapshot(session, incident=incident, moment=moment, sources=sources, now=now) is not None:
            taken.append(moment)
    return taken


def merged_series(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Snapshots' series (each as telemetry_snapshot gives it) joined in time: {"t": [...], "gpus": {key:
    {"role", "pod", "metrics"}}}, each metric list aligned with "t" (None where that part had no value); a part
    repeating times already covered adds only its later samples."""
    times: list[float] = []
    gpus: dict[str, Any] = {}
    for part in parts:
        stamps = [float(x) for x in part.get("t", [])]
        keep = [i for i, ts in enumerate(stamps) if not times or ts > times[-1]]
        offset = len(times)
        times += [stamps[i] for i in keep]
        for key, info in (part.get("gpus") or {}).items():
            entry = gpus.setdefault(key, {"role": info.get("role", "node"), "pod": info.get("pod", ""),
                                          "metrics": {}})
            for name, values in (info.get("metrics") or {}).items():
                column = entry["metrics"].setdefault(name, [])
                column += [None] * (offset - len(column))
                column += [values[i] if i < len(values) else None for i in keep]
    for entry in gpus.values():
        for column in entry["metrics"].values():
            column += [None] * (len(times) - len(column))
    return {"t": times, "gpus": gpus}


def first_workload(evidence: Sequence[IncidentEvidence]) -> Workload | None:
    """What ran on the node when the incident opened (the earliest snapshot with a workload)."""
    for snap in evidence:
        if snap.workload and "node" in snap.workload:
            return Workload.from_json(snap.workload)
    return None


def executed_actions(incident: Incident) -> list[Action]:
    return [a for a in incident.actions if a.executed_at is not None]
