"""The fleet view and the incident charts from the store, a fake cluster and in-memory telemetry; without a
telemetry source the charts say so instead of failing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from connectors.kubernetes.fake import InMemoryCluster
from connectors.telemetry import InMemoryTelemetry
from detectors.frame import FleetFrame, GpuLabels
from entrypoints.web.fleet import fleet_view
from entrypoints.web.incident_charts import incident_charts
from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.store.models import Incident
from gpuops.wiring import bootstrap


def test_fleet_colours_gpus_by_open_incidents_and_counts_nodes_out(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    cluster = InMemoryCluster()
    cluster.add_node("gpu-node-001", gpus=2)
    cluster.add_node("gpu-node-002", gpus=2, unschedulable=True)
    container = bootstrap(Settings(database_url=sqlite_url), cluster=cluster)
    now = datetime.now(tz=UTC)
    with container.uow() as uow:
        uow.session.add(Incident(dedup_key="k", scope="gpu", family="ecc", hostname="gpu-node-001", gpu=1,
                                 severity="critical", title="t", status="open", opened_at=now, updated_at=now))
        uow.commit()
    with container.session_factory() as session:
        view = fleet_view(container, session, now)
    container.close()
    cells = {(n["name"], g["gpu"]): g["health"] for n in view["nodes"] for g in n["gpus"]}
    assert cells == {("gpu-node-001", 0): "ok", ("gpu-node-001", 1): "critical",
                     ("gpu-node-002", 0): "ok", ("gpu-node-002", 1): "ok"}
    assert view["budgets"]["nodes_out"] == ["gpu-node-002"]
    assert view["cluster"] == "ok" and view["telemetry"] == "no telemetry source"


def test_incident_charts_draw_svg_from_telemetry_or_say_there_is_none(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    opened = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    stamps = np.arange((opened - timedelta(hours=1)).timestamp(), (opened + timedelta(hours=1)).timestamp(), 15.0)
    temps = np.vstack([np.full(len(stamps), 60.0), np.linspace(60, 95, len(stamps))])
    frame = FleetFrame(stamps, GpuLabels(hostname=("gpu-node-001",) * 2, gpu=(0, 1), uuid=("a", "b"),
                                         model_name=("H100",) * 2), {"DCGM_FI_DEV_GPU_TEMP": temps})
    incident = Incident(dedup_key="k", scope="gpu", family="thermal", hostname="gpu-node-001", gpu=1,
                        severity="warning", title="hot", status="open", opened_at=opened, updated_at=opened)
    with_telemetry = bootstrap(Settings(database_url=sqlite_url), telemetry=InMemoryTelemetry(frame))
    drawn = incident_charts(with_telemetry, incident, opened + timedelta(minutes=20))
    assert drawn.note == "" and len(drawn.charts) == 1
    assert "<svg" in drawn.charts[0] and "DCGM_FI_DEV_GPU_TEMP" in drawn.charts[0] and "opened" in drawn.charts[0]
    without = bootstrap(Settings(database_url=sqlite_url))
    assert incident_charts(without, incident, opened).note.startswith("no telemetry source")
    with_telemetry.close()
    without.close()
