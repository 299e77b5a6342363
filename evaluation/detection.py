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
from domain import clock
from evaluation.baselines import INCIDENT_MARGIN_S, ThresholdAlerts, fault_window
from gpuops.config import Settings
from gpuops.incidents.service import ingest_findings
from gpuops.store import migrate
from gpuops.store.models import Incident
from gpuops.wiring import bootstrap
from simulator.recording import cycle_frames
from simulator.scenario import Scenario
from simulator.twin import Twin


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
    alerts = ThresholdAlerts()  # the baseline, on the same frames
    try:
        with clock.using(lambda: twin.t):  # what the incident service stores takes the fleet's time
            for frame in cycle_frames(twin, cycle_steps):
                alerts.update(frame)
                new = detection.update(frame)
                findings.extend(new)
                if new:
                    with container.uow() as uow:
                        ingest_findings(uow.session, new, fleet_nodes=twin.n_nodes)
                        uow.commit()
        truth = twin.truth()
        with container.uow() as uow:
            incidents = list(uow.session.scalars(select(Incident).where(Incident.parent_id.is_(None))))
            for incident in incidents:
                _ = incident.findings  # loaded while the session is open
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
        "false_by_detector": _by_detector(false),
        "threshold_false_pages": _threshold_false_pages(alerts, faults, twin.gpus_per_node, twin.nodes),
    }


def _by_detector(incidents: list[Incident]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for incident in incidents:
        first = min(incident.findings, key=lambda f: (f.ts, f.id), default=None)
        key = f"{first.detector}/{first.kind}" if first is not None else f"fleet correlation/{incident.family}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _threshold_false_pages(alerts: ThresholdAlerts, faults: list[dict[str, Any]], per_node: int,
                           nodes: tuple[str, ...]) -> int:
    """The threshold-alert baseline's pages on nodes no fault touched: each GPU and each node that alerted at
    least once (alerts latch, so this counts the least such a dashboard would page)."""
    faulty = {str(f["node"]) for f in faults}
    gpus = sum(1 for row in alerts.first_gpu if nodes[row // per_node] not in faulty)
    return gpus + sum(1 for node in alerts.first_node if node not in faulty)


def _matches_fault(incident: Incident, faults: list[dict[str, Any]], scenario: Scenario) -> bool:
    """An incident is about a fault when it was open on the fault's host while the fault was under way
    (a finding of the fault may merge into an incident the host already had)."""
    opened, last = incident.opened_at.timestamp(), incident.updated_at.timestamp()
    for fault in faults:
        start, end = fault_window(fault, scenario)
        overlaps = opened <= end + INCIDENT_MARGIN_S and last >= start
        if overlaps and (incident.scope == "fleet" or incident.hostname == fault["node"]):
            return True
    return False


def _ts(value: Any) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).timestamp()
