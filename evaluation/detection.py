"""Scenario evaluation of detection: run the twin in process, feed every cycle's frame to the detectors and
the findings to the real incident service (an in-memory store), and score both against the ground truth."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from detectors.evaluation import score_faults, summarise
from detectors.findings import Finding
from detectors.pipeline import DetectionCycle
from gpuops.config import Settings
from gpuops.incidents.service import ingest_findings
from gpuops.store import migrate
from gpuops.store.models import Incident
from gpuops.wiring import bootstrap
from simulator.recording import cycle_frames
from simulator.scenario import Scenario
from simulator.twin import Twin

INCIDENT_MARGIN_S = 1800.0  # an incident up to 30 min after a fault ends still belongs to it


def evaluate_detection(scenario: Scenario, *, cycle_steps: int = 2, database_url: str | None = None) -> dict[str, Any]:
    """Run `scenario` through the detectors and the incident service; return fault scores, incidents, rates.
    Without `database_url` the incidents go to a throw-away SQLite file."""
    if database_url is None:
        with tempfile.TemporaryDirectory() as tmp:
            return evaluate_detection(scenario, cycle_steps=cycle_steps, database_url=f"sqlite:///{tmp}/eval.db")
    twin = Twin(scenario)
    detection = DetectionCycle()
    migrate.upgrade(database_url)
    container = bootstrap(Settings(database_url=database_url))
    findings: list[Finding] = []
    try:
        for frame in cycle_frames(twin, cycle_steps):
            new = detection.update(frame)
            findings.extend(new)
            if new:
                with container.uow() as uow:
                    ingest_findings(uow.session, new, fleet_nodes=twin.n_nodes)
                    uow.commit()
        truth = twin.truth()
        with container.uow() as uow:
            incidents = list(uow.session.scalars(select(Incident).where(Incident.parent_id.is_(None))))
    finally:
        container.close()
    faults = truth["faults"]
    scores = score_faults(findings, faults)
    matched: list[Incident] = []
    false: list[Incident] = []
    for inc in incidents:
        (matched if _matches_fault(inc, faults, scenario) else false).append(inc)
    gpu_days = scenario.fleet.n_gpus * scenario.duration / 86400.0
    return {
        "scenario": scenario.name, "seed": scenario.seed, "gpu_days": round(gpu_days, 3),
        "findings": len(findings), "detection": summarise(scores, scenario.step),
        "faults": [asdict(s) for s in scores],
        "incidents": len(incidents), "false_incidents": len(false),
        "false_incidents_per_1000_gpu_days": round(1000 * len(false) / gpu_days, 2) if gpu_days else None,
        "false_incident_kinds": sorted({f"{i.family}" for i in false}),
    }


def _matches_fault(incident: Incident, faults: list[dict[str, Any]], scenario: Scenario) -> bool:
    """An incident is about a fault when it was open on the fault's host while the fault was under way
    (a finding of the fault may merge into an incident the host already had)."""
    opened, last = incident.opened_at.timestamp(), incident.updated_at.timestamp()
    for fault in faults:
        start = _ts(fault["onset"]) - scenario.step
        end = max(_ts(fault.get("cleared_at") or fault.get("failure_at") or fault["onset"]), start)
        overlaps = opened <= end + INCIDENT_MARGIN_S and last >= start
        if overlaps and (incident.scope == "fleet" or incident.hostname == fault["node"]):
            return True
    return False


def _ts(value: Any) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).timestamp()
