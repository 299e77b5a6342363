"""The graph's reads and writes on the store: the incident snapshot, lifecycle moves that tolerate a re-run,
timeline entries, audit records and the per-incident LLM usage."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gpuops.errors import NotFound
from gpuops.incidents.lifecycle import add_timeline, can_transition, transition
from gpuops.store.audit import append_event
from gpuops.store.models import Incident

log = logging.getLogger(__name__)


def load(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist")
    return incident


def snapshot(incident: Incident) -> dict[str, Any]:
    """The incident as plain data: what triage puts in the state for the other nodes."""
    evidence: dict[str, Any] = {}
    data_times = []
    for finding in sorted(incident.findings, key=lambda f: f.ts):
        evidence.update(finding.evidence or {})
        data_times.append(finding.ts.timestamp())
    xid = evidence.get("xid")
    return {
        "id": incident.id, "scope": incident.scope, "family": incident.family, "hostname": incident.hostname,
        "gpu": incident.gpu, "severity": incident.severity, "status": incident.status, "title": incident.title,
        "details": dict(incident.details or {}), "evidence": evidence,
        "xid": int(xid) if isinstance(xid, int | float | str) and str(xid).isdigit() else None,
        "opened_at": incident.opened_at.isoformat(),
        "opened_ts": min(data_times) if data_times else incident.opened_at.timestamp(),
    }


def move(session: Session, incident: Incident, target: str, *, reason: str, actor: str, now: datetime) -> bool:
    """Transition when the lifecycle allows it; a node re-run after a resume finds it already done."""
    if incident.status == target:
        return False
    if not can_transition(incident.status, target):
        log.info("incident %s stays %s (no move to %s)", incident.id, incident.status, target)
        return False
    transition(session, incident, target, reason=reason, actor=actor, now=now)
    return True


def record(session: Session, incident: Incident, *, kind: str, message: str, data: dict[str, Any], actor: str,
           now: datetime, action_id: int | None = None) -> None:
    """One timeline entry and one audit record."""
    add_timeline(session, incident, kind=kind, message=message[:2000], now=now, data=data)
    append_event(session, actor=actor, kind=kind, incident_id=incident.id, action_id=action_id,
                 data={"message": message[:2000], **data}, ts=now)


def llm_calls(incident: Incident) -> int:
    return int((incident.details or {}).get("llm_usage", {}).get("calls", 0))


def add_llm_usage(incident: Incident, usage: dict[str, Any]) -> dict[str, Any]:
    """Accumulate tokens, calls and cost on the incident (reassigned so the JSON column is saved)."""
    details = dict(incident.details or {})
    total = dict(details.get("llm_usage") or {})
    for key in ("calls", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
        total[key] = round(total.get(key, 0) + usage.get(key, 0), 6)
    details["llm_usage"] = total
    incident.details = details
    return total
