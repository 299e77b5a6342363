"""Read-side queries on incidents and findings: what the CLI, the dashboard and the JSON API show."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpuops.errors import NotFound
from gpuops.store.models import FindingRecord, Incident

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def list_incidents(
    session: Session, *, status: str | None = None, severity: str | None = None,
    hostname: str | None = None, limit: int = 200,
) -> list[Incident]:
    stmt = select(Incident)
    if status:
        stmt = stmt.where(Incident.status == status)
    if severity:
        stmt = stmt.where(Incident.severity == severity)
    if hostname:
        stmt = stmt.where(Incident.hostname == hostname)
    stmt = stmt.order_by(Incident.opened_at.desc(), Incident.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def get_incident(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist; `gpuops incidents list` shows the ids")
    return incident


def count_by_status(session: Session) -> dict[tuple[str, str], int]:
    rows = session.execute(
        select(Incident.status, Incident.severity, func.count()).group_by(Incident.status, Incident.severity)
    )
    return {(status, severity): int(n) for status, severity, n in rows}


def incident_summary(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "scope": incident.scope,
        "kind": incident.family,
        "hostname": incident.hostname,
        "gpu": incident.gpu,
        "status": incident.status,
        "severity": incident.severity,
        "title": incident.title,
        "occurrences": incident.occurrences,
        "opened_at": incident.opened_at.isoformat(),
        "updated_at": incident.updated_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "acknowledged_at": incident.acknowledged_at.isoformat() if incident.acknowledged_at else None,
        "acknowledged_by": incident.acknowledged_by,
        "assignee": incident.assignee,
    }


def incident_detail(incident: Incident) -> dict[str, Any]:
    detail = incident_summary(incident)
    detail["summary"] = incident.summary
    detail["details"] = incident.details
    detail["timeline"] = [
        {"ts": ev.ts.isoformat(), "kind": ev.kind, "message": ev.message, "data": ev.data}
        for ev in incident.events
    ]
    detail["actions"] = [
        {"id": a.id, "runbook": a.runbook, "parameters": a.parameters, "targets": a.targets,
         "status": a.status, "risk": a.risk, "plan_hash": a.plan_hash}
        for a in incident.actions
    ]
    return detail


def list_findings(session: Session, *, hostname: str | None = None, gpu: int | None = None, kind: str | None = None,
                  incident_id: int | None = None, since: datetime | None = None, before_id: int | None = None,
                  limit: int = 200) -> list[FindingRecord]:
    """Findings, newest first, filtered; `before_id` pages back (the next page's ids are below it)."""
    stmt = select(FindingRecord)
    if hostname:
        stmt = stmt.where(FindingRecord.hostname == hostname)
    if gpu is not None:
        stmt = stmt.where(FindingRecord.gpu == gpu)
    if kind:
        stmt = stmt.where(FindingRecord.kind == kind)
    if incident_id is not None:
        stmt = stmt.where(FindingRecord.incident_id == incident_id)
    if since is not None:
        stmt = stmt.where(FindingRecord.ts >= since)
    if before_id is not None:
        stmt = stmt.where(FindingRecord.id < before_id)
    return list(session.scalars(stmt.order_by(FindingRecord.ts.desc(), FindingRecord.id.desc()).limit(limit)))


def finding_summary(f: FindingRecord) -> dict[str, Any]:
    """A finding as people and scripts read it: what, where, how sure, why (its evidence), and its incident."""
    return {"id": f.id, "ts": f.ts.isoformat(), "hostname": f.hostname, "gpu": f.gpu, "kind": f.kind,
            "severity": f.severity, "score": round(float(f.score), 3), "detector": f.detector,
            "predicted_failure_at": f.predicted_failure_at.isoformat() if f.predicted_failure_at else None,
            "evidence": dict(f.evidence or {}), "incident_id": f.incident_id}
