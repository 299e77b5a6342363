"""An incident's charts: drawn from the evidence kept with it (snapshots taken when it opened and after each
action), extended with live telemetry only after the last snapshot. The faulty GPU against the median of its node
peers and of its job's GPUs on other nodes, before and after, with the incident's moments marked; XID codes as
events, not as a line at zero."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup

from connectors.telemetry import TelemetryError
from entrypoints.web.charts import Marker, Series, event_strip, line_chart
from gpuops.errors import ConfigError
from gpuops.incidents.evidence import BEFORE, merged_series, metrics_of, telemetry_snapshot
from gpuops.store.models import Incident, IncidentEvidence
from gpuops.wiring import Container

AFTER = timedelta(minutes=30)
POINTS = 180
XID = "DCGM_FI_DEV_XID_ERRORS"
# title in words, unit
METRIC_WORDS: dict[str, tuple[str, str]] = {
    "DCGM_FI_DEV_GPU_TEMP": ("GPU temperature", "°C"),
    "DCGM_FI_DEV_MEMORY_TEMP": ("Memory temperature", "°C"),
    "DCGM_FI_DEV_GPU_UTIL": ("GPU utilisation", "%"),
    "DCGM_FI_DEV_POWER_USAGE": ("Power draw", "W"),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": ("Double-bit ECC errors since the driver loaded", "errors"),
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": ("Single-bit ECC errors since the driver loaded", "errors"),
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": ("Memory rows remapped after uncorrectable errors", "rows"),
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": ("Row remapping failed (1 = yes)", ""),
    "DCGM_FI_DEV_THERMAL_VIOLATION": ("Time throttled for heat", "µs"),
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": ("NVLink CRC errors", "errors"),
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": ("PCIe replays", "replays"),
    "DCGM_FI_DEV_SM_CLOCK": ("SM clock", "MHz"),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("Graphics engine busy (fraction of time)", ""),
    "DCGM_FI_DEV_FB_USED": ("GPU memory used", "MiB"),
}


@dataclass(frozen=True)
class IncidentCharts:
    charts: list[Markup]
    note: str    # why there are no charts, or an empty string
    source: str = ""  # where the charts' data came from, in words


def _window_end(incident: Incident, now: datetime) -> datetime:
    # data time may run ahead of the wall clock (the demo's accelerated fleet): never end before the incident
    latest = max(now, incident.updated_at, incident.opened_at)
    return min(latest, (incident.resolved_at or latest) + AFTER)


def _live(container: Container, incident: Incident, start: datetime, end: datetime) -> dict[str, Any] | str:
    """Live telemetry of the kept GPUs from `start` to `end`, or why there is none."""
    assert incident.hostname is not None
    step = max(container.settings.step_seconds, (end - start).total_seconds() / POINTS)
    try:
        frame = container.telemetry.frame(start.timestamp(), end.timestamp(), step,
                                          metrics=list(metrics_of(incident.family)), node_series={})
    except ConfigError:
        return "no telemetry source configured (GPUOPS_PROMETHEUS_URL or GPUOPS_SCRAPE_URLS)"
    except (TelemetryError, ValueError) as exc:
        return f"telemetry unavailable: {exc}"
    return telemetry_snapshot(frame, incident.hostname, incident.gpu, metrics_of(incident.family))


def markers_of(incident: Incident) -> list[Marker]:
    markers = [Marker(incident.opened_at.timestamp(), "incident opened")]
    markers += [Marker(a.executed_at.timestamp(), f"#{a.id} {a.runbook.replace('_', ' ')}")
                for a in incident.actions if a.executed_at is not None]
    if incident.resolved_at is not None:
        markers.append(Marker(incident.resolved_at.timestamp(), "resolved"))
    return markers


def incident_charts(container: Container, incident: Incident, now: datetime,
                    evidence: Sequence[IncidentEvidence] = ()) -> IncidentCharts:
    if not incident.hostname:
        return IncidentCharts([], "a fleet-wide incident has no single node to chart")
    kept = [e.series for e in evidence if e.series and "t" in e.series]
    start = evidence[-1].window_end if evidence else incident.opened_at - BEFORE
    end = _window_end(incident, now)
    live: dict[str, Any] | str = {}
    if end - start > timedelta(seconds=container.settings.step_seconds):
        live = _live(container, incident, start, end)
    parts = kept + ([live] if isinstance(live, dict) and live else [])
    data = merged_series(parts)
    if not data["gpus"]:
        if isinstance(live, str):
            return IncidentCharts([], live)
        return IncidentCharts([], f"the telemetry source has no GPUs of {incident.hostname} in this window, and "
                                  "no evidence was kept with the incident")
    source = (f"kept with the incident ({len(kept)} snapshot{'s' if len(kept) != 1 else ''})" if kept else "")
    if isinstance(live, dict) and live:
        source = f"{source}, then live" if source else "live telemetry (nothing kept with the incident yet)"
    elif isinstance(live, str) and kept:
        source += f"; no live data after it: {live}"
    charts = draw(data, incident, markers_of(incident))
    return IncidentCharts(charts, "" if charts else "no samples of the relevant metrics in this window", source)


def _values(column: Sequence[Any]) -> list[float]:
    return [float(v) if isinstance(v, int | float) and math.isfinite(v) else math.nan for v in column]


def _median(columns: Sequence[list[float]], n: int) -> list[float]:
    out = []
    for i in range(n):
        finite = [c[i] for c in columns if i < len(c) and math.isfinite(c[i])]
        out.append(statistics.median(finite) if finite else math.nan)
    return out


def draw(data: Mapping[str, Any], incident: Incident, markers: Sequence[Marker]) -> list[Markup]:
    """One chart per metric: the faulty GPU(s), the node peers' median, the job peers' median; XID as events."""
    stamps: list[float] = list(data["t"])
    gpus: Mapping[str, Any] = data["gpus"]
    charts: list[Markup] = []
    for name in metrics_of(incident.family):
        columns = {key: _values(info["metrics"][name]) for key, info in gpus.items() if name in info["metrics"]}
        if not columns or not any(math.isfinite(v) for c in columns.values() for v in c):
            continue
        faulty = {k: c for k, c in columns.items() if gpus[k]["role"] == "faulty"}
        if name == XID:
            charts.append(_xid_events(stamps, columns, _silences(stamps, gpus), _span(stamps, gpus), markers))
            continue
        title, unit = METRIC_WORDS.get(name, (name, ""))
        series = [Series(f"GPU {k.rpartition('/')[2]}{' (faulty)' if incident.gpu is not None else ''}", c,
                         emphasis=incident.gpu is not None) for k, c in list(faulty.items())[:6]]
        node = [c for k, c in columns.items() if gpus[k]["role"] == "node"]
        job = [c for k, c in columns.items() if gpus[k]["role"] == "job"]
        if node:
            series.append(Series(f"node peers (median of {len(node)})",
                                 _median(node, len(stamps)), colour="#64748b", dashed=True))
        if job:
            series.append(Series(f"same job, other nodes (median of {len(job)})",
                                 _median(job, len(stamps)), colour="#0891b2", dashed=True))
        charts.append(line_chart(title, stamps, series, markers, unit=unit, field_name=name,
                                 span=_span(stamps, gpus)))
    return charts


def _span(stamps: Sequence[float], gpus: Mapping[str, Any]) -> tuple[float, float]:
    """The first and last moment any kept GPU has a sample of any metric (the charts' common x range)."""
    seen = [i for info in gpus.values() for column in info["metrics"].values()
            for i, v in enumerate(column) if isinstance(v, int | float) and math.isfinite(v)]
    if not seen:
        return (stamps[0], stamps[-1]) if stamps else (0.0, 60.0)
    return stamps[min(seen)], stamps[max(seen)]


def _silences(stamps: Sequence[float], gpus: Mapping[str, Any]) -> list[tuple[float, str]]:
    """Faulty GPUs that stopped reporting while others went on: (their last sample's time, what happened)."""
    last_any = _span(stamps, gpus)[1]
    events = []
    for key, info in gpus.items():
        if info["role"] != "faulty":
            continue
        finite = [i for column in info["metrics"].values() for i, v in enumerate(column)
                  if isinstance(v, int | float) and math.isfinite(v)]
        if finite and stamps[max(finite)] < last_any:
            events.append((stamps[max(finite)], f"GPU {key.rpartition('/')[2]} stopped reporting"))
    return events


def _xid_events(stamps: Sequence[float], columns: Mapping[str, list[float]], silences: list[tuple[float, str]],
                span: tuple[float, float], markers: Sequence[Marker]) -> Markup:
    """Each XID code a GPU reported when it first appeared (the field holds the last code, 0 = none), and each
    faulty GPU that went silent."""
    events: list[tuple[float, str]] = list(silences)
    for key, column in columns.items():
        previous = 0.0
        for t, value in zip(stamps, column, strict=False):
            if math.isfinite(value) and value > 0 and value != previous:
                events.append((t, f"XID {value:.0f} on GPU {key.rpartition('/')[2]}"))
            if math.isfinite(value):
                previous = value
    events.sort()
    return event_strip("Driver events: XID errors, GPUs that stopped reporting", span[0], span[1], events, markers)
