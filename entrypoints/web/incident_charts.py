"""The metrics around an incident, before and after: the family's telling series for its node (or GPU), from the
configured telemetry source, drawn as SVG with the moments the incident opened and its actions ran."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from markupsafe import Markup

from connectors.telemetry import TelemetryError
from entrypoints.web.charts import Marker, line_chart
from gpuops.errors import ConfigError
from gpuops.store.models import Incident
from gpuops.wiring import Container

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
BEFORE = timedelta(minutes=30)
AFTER = timedelta(minutes=30)
POINTS = 120


@dataclass(frozen=True)
class IncidentCharts:
    charts: list[Markup]
    note: str  # why there are no charts, or an empty string


def incident_charts(container: Container, incident: Incident, now: datetime) -> IncidentCharts:
    if not incident.hostname:
        return IncidentCharts([], "a fleet-wide incident has no single node to chart")
    metrics = (*FAMILY_METRICS.get(incident.family, ()), *BASE_METRICS)
    start = incident.opened_at - BEFORE
    # data time may run ahead of the wall clock (the demo's accelerated fleet): never end before the incident
    latest = max(now, incident.updated_at, incident.opened_at)
    end = min(latest, (incident.resolved_at or latest) + AFTER)
    step = max(container.settings.step_seconds, (end - start).total_seconds() / POINTS)
    try:
        frame = container.telemetry.frame(start.timestamp(), end.timestamp(), step, metrics=list(metrics),
                                          node_series={})
    except ConfigError:
        return IncidentCharts([], "no telemetry source configured (GPUOPS_PROMETHEUS_URL or GPUOPS_SCRAPE_URLS)")
    except (TelemetryError, ValueError) as exc:
        return IncidentCharts([], f"telemetry unavailable: {exc}")
    rows = [i for i, (host, gpu) in enumerate(zip(frame.gpus.hostname, frame.gpus.gpu, strict=True))
            if host == incident.hostname and (incident.gpu is None or gpu == incident.gpu)]
    if not rows:
        return IncidentCharts([], f"the telemetry source has no GPUs of {incident.hostname} in this window")
    markers = [Marker(incident.opened_at.timestamp(), "opened")]
    markers += [Marker(a.executed_at.timestamp(), f"#{a.id} {a.runbook}") for a in incident.actions
                if a.executed_at is not None]
    if incident.resolved_at is not None:
        markers.append(Marker(incident.resolved_at.timestamp(), "resolved"))
    stamps = [float(t) for t in frame.timestamps]
    charts = []
    for name in metrics:
        data = frame.metric(name)
        if data is None or not np.isfinite(data[rows]).any():
            continue
        series = {f"gpu {frame.gpus.gpu[i]}": [float(v) if math.isfinite(v) else math.nan for v in data[i]]
                  for i in rows}
        charts.append(line_chart(name, stamps, series, markers))
    return IncidentCharts(charts, "" if charts else "no samples of the relevant metrics in this window")
