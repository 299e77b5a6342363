"""The incident state machine: explicit allowed transitions, each recorded on the timeline and audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from domain import IncidentStatus
from gpuops.errors import Conflict
from gpuops.store.audit import append_event
from gpuops.store.models import Incident, IncidentEvent

ACTIVE = IncidentStatus.ACTIVE  # the one definition is domain's; these names stay for older importers
CLOSED = IncidentStatus.CLOSED

_S = IncidentStatus

TRANSITIONS: dict[str, frozenset[IncidentStatus]] = {
    _S.OPEN: frozenset({_S.INVESTIGATING, _S.ESCALATED, _S.SUPPRESSED, _S.RESOLVED}),
    _S.INVESTIGATING: frozenset({_S.AWAITING_APPROVAL, _S.EXECUTING, _S.ESCALATED, _S.RESOLVED, _S.SUPPRESSED}),
    _S.AWAITING_APPROVAL: frozenset({_S.EXECUTING, _S.INVESTIGATING, _S.ESCALATED, _S.RESOLVED, _S.SUPPRESSED}),
    _S.EXECUTING: frozenset({_S.VERIFYING, _S.ESCALATED}),
    _S.VERIFYING: frozenset({_S.RESOLVED, _S.ESCALATED, _S.INVESTIGATING}),
    _S.ESCALATED: frozenset({_S.INVESTIGATING, _S.RESOLVED, _S.SUPPRESSED}),
    _S.RESOLVED: frozenset({_S.OPEN}),
    _S.SUPPRESSED: frozenset({_S.OPEN, _S.RESOLVED}),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def add_timeline(session: Session, incident: Incident, *, kind: str, message: str, now: datetime,
                 data: dict[str, Any] | None = None) -> IncidentEvent:
    event = IncidentEvent(incident_id=incident.id, ts=now, kind=kind, message=message, data=data or {})
    session.add(event)
    return event


def transition(session: Session, incident: Incident, target: str, *, reason: str, actor: str,
               now: datetime) -> None:
    """Move `incident` to `target` or raise Conflict naming the allowed moves."""
    current = incident.status
    if current == target:
        return
    if not can_transition(current, target):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, frozenset()))) or "none"
        raise Conflict(f"incident {incident.id} cannot go from {current} to {target}; allowed: {allowed}")
    incident.status = target
    incident.updated_at = now
    if target == IncidentStatus.RESOLVED:
        incident.resolved_at = now
    elif target == IncidentStatus.OPEN:
        incident.resolved_at = None
    add_timeline(session, incident, kind=f"status.{target}", message=reason, now=now,
                 data={"from": current, "to": target, "actor": actor})
    append_event(session, actor=actor, kind="incident.transition", incident_id=incident.id,
                 data={"from": current, "to": target, "reason": reason}, ts=now)
