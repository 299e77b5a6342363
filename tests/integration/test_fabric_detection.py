"""Fabric faults on the twin through the detectors and the incident service: each fault kind is found at its
onset, and a job stalled or slowed by one node's link is one incident on that node (its ranks' hangs on every
node fold into it), not an incident per rank; a link down on many nodes at once is one fleet-wide incident,
escalated to a human."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from evaluation.detection import evaluate_detection
from gpuops.config import Settings
from gpuops.store.models import Incident
from gpuops.wiring import bootstrap
from simulator.scenario import scenario_from_dict

FLEET = {"nodes": 6, "gpus_per_node": 8, "gpu_model": "H100 80GB"}
WORK = [{"type": "training", "name": "pretrain", "nodes": 3}, {"type": "training", "name": "tune", "nodes": 2}]


def incidents(url: str) -> list[Incident]:
    container = bootstrap(Settings(database_url=url))
    try:
        with container.uow() as uow:
            return list(uow.session.scalars(select(Incident).order_by(Incident.id)))
    finally:
        container.close()


def run(tmp_path: Path, faults: list[dict[str, Any]], duration: str = "1h40m") -> tuple[dict[str, Any], list[Incident]]:
    url = f"sqlite:///{tmp_path}/fabric.db"
    scenario = scenario_from_dict({"name": "fabric", "seed": 5, "fleet": FLEET, "duration": duration, "step": "15s",
                                   "workloads": WORK, "faults": faults, "approval": "auto_approve"})
    return evaluate_detection(scenario, database_url=url), incidents(url)


def test_each_fabric_fault_is_one_incident_on_its_node(tmp_path: Path) -> None:
    result, found = run(tmp_path, [
        {"kind": "ib_link_down", "node": "gpu-node-001", "hca": 3, "at": "20m"},
        {"kind": "ib_link_degraded", "node": "gpu-node-004", "hca": 1, "at": "35m"},
        {"kind": "ib_symbol_errors", "node": "gpu-node-006", "hca": 0, "at": "50m"},
        {"kind": "nic_lost", "node": "gpu-node-005", "hca": 6, "at": "1h5m"},
        {"kind": "ib_link_flap", "node": "gpu-node-002", "hca": 2, "at": "1h20m", "every": "2m"}])
    by_kind = result["detection"]["by_kind"]
    assert {k: v["detected"] for k, v in by_kind.items()} == {
        "ib_link_down": 1, "ib_link_degraded": 1, "ib_symbol_errors": 1, "nic_lost": 1, "ib_link_flap": 1}
    assert max(d for v in by_kind.values() for d in v["delays_s"]) <= 30.0
    assert result["false_incidents"] == 0
    summary = sorted((i.hostname, i.family, i.severity, i.status) for i in found)
    assert summary == [("gpu-node-001", "fabric", "critical", "open"), ("gpu-node-002", "fabric", "critical", "open"),
                       ("gpu-node-004", "fabric", "critical", "open"), ("gpu-node-005", "fabric", "critical", "open"),
                       ("gpu-node-006", "fabric", "warning", "open")]
    down = next(i for i in found if i.hostname == "gpu-node-001")
    assert down.title == "InfiniBand link down (mlx5_3 port 1) on gpu-node-001"
    assert down.occurrences > 100  # the job's hung ranks on its other nodes, folded in


def test_a_leaf_switch_event_is_one_escalated_fleet_incident(tmp_path: Path) -> None:
    _, found = run(tmp_path, [{"kind": "ib_link_down", "node": f"gpu-node-00{n}", "hca": 2, "at": "20m"}
                              for n in (3, 4, 5, 6)], duration="40m")
    (fleet,) = [i for i in found if i.scope == "fleet"]
    assert fleet.status == "escalated" and fleet.family == "fabric"
    assert fleet.details["hosts"] == ["gpu-node-003", "gpu-node-004", "gpu-node-005", "gpu-node-006"]
    assert all(i.parent_id == fleet.id and i.status == "suppressed" for i in found if i.scope != "fleet"), \
        [(i.id, i.hostname, i.family, i.status, i.parent_id, i.details) for i in found]
