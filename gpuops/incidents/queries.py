"""Read-side queries on incidents: what the CLI, the dashboard and the JSON API show."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpuops.errors import NotFound
from gpuops.store.models import Incident

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
