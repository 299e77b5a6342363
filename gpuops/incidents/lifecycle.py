"""The incident state machine: explicit allowed transitions, each recorded on the timeline and audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gpuops.errors import Conflict
from gpuops.store.audit import append_event
from gpuops.store.models import Incident, IncidentEvent

ACTIVE = ("open", "investigating", "awaiting_approval", "executing", "verifying", "escalated")
CLOSED = ("resolved", "suppressed")

TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"investigating", "escalated", "suppressed", "resolved"}),
    "investigating": frozenset({"awaiting_approval", "executing", "escalated", "resolved", "suppressed"}),
    "awaiting_approval": frozenset({"executing", "investigating", "escalated", "resolved", "suppressed"}),
    "executing": frozenset({"verifying", "escalated"}),
    "verifying": frozenset({"resolved", "escalated", "investigating"}),
    "escalated": frozenset({"investigating", "resolved", "suppressed"}),
    "resolved": frozenset({"open"}),
    "suppressed": frozenset({"open", "resolved"}),
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
    if target == "resolved":
        incident.resolved_at = now
    elif target == "open":
        incident.resolved_at = None
    add_timeline(session, incident, kind=f"status.{target}", message=reason, now=now,
                 data={"from": current, "to": target, "actor": actor})
    append_event(session, actor=actor, kind="incident.transition", incident_id=incident.id,
                 data={"from": current, "to": target, "reason": reason}, ts=now)
