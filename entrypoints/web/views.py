"""What the dashboard and the JSON API show, read from the store: an incident with its whole timeline, actions with
their approvals, the audit trail with its chain check, and what changed since (for live updates)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain import ActionStatus, Budget
from gpuops.execution.approvals import valid_approvals
from gpuops.incidents.queries import get_incident, incident_summary
from gpuops.store.models import Action, AuditEvent, FindingRecord, Incident


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def action_view(action: Action, now: datetime) -> dict[str, Any]:
    """An action as an approver needs to see it: the plan, its targets and parameters, the predicted impact,
    policy's verdict with its budget in Slack's words, and the approvals so far against those required."""
    diff = action.diff or {}
    budget = Budget.from_json((action.verdict or {}).get("budget"))
    return {
        "id": action.id, "incident_id": action.incident_id, "runbook": action.runbook,
        "parameters": action.parameters, "targets": action.targets, "plan_hash": action.plan_hash,
        "status": action.status, "risk": action.risk, "rationale": action.rationale,
        "created_at": _iso(action.created_at), "updated_at": _iso(action.updated_at),
        "executed_at": _iso(action.executed_at), "verified_at": _iso(action.verified_at),
        "error": action.error, "result": action.result,
        "impact": {"changes": list(diff.get("changes", [])), "pods_affected": list(diff.get("pods_affected", [])),
                   "gpus_affected": diff.get("gpus_affected", 0),
                   "gpu_hours_at_risk": diff.get("gpu_hours_at_risk", 0.0),
                   "blockers": list(diff.get("blockers", []))},
        "verdict": action.verdict,
        "budget": [{"label": label, "text": text} for label, text in budget.describe()] if budget else [],
        "approvals": {"valid": len(valid_approvals(action, now)), "required": action.approvals_required},
        "decisions": [{"approver": a.approver, "channel": a.channel, "decision": a.decision, "reason": a.reason,
                       "decided_at": _iso(a.decided_at), "expires_at": _iso(a.expires_at),
                       "current_plan": a.plan_hash == action.plan_hash} for a in action.approvals],
        "awaiting_decision": action.status == ActionStatus.AWAITING_APPROVAL,
    }


def list_actions(session: Session, *, status: str | None = None, limit: int = 200) -> list[Action]:
    stmt = select(Action)
    if status:
        stmt = stmt.where(Action.status == status)
    return list(session.scalars(stmt.order_by(Action.id.desc()).limit(limit)))


def timeline(session: Session, incident: Incident) -> list[dict[str, Any]]:
    """Findings, status changes, plans, approvals, executions and audit events of an incident, oldest first."""
    entries: list[dict[str, Any]] = []

    def add(ts: datetime | None, source: str, kind: str, message: str, actor: str = "") -> None:
        if ts is not None:
            entries.append({"ts": ts.isoformat(), "source": source, "kind": kind, "message": message,
                            "actor": actor})

    findings = session.scalars(select(FindingRecord).where(FindingRecord.incident_id == incident.id)
                               .order_by(FindingRecord.ts).limit(200))
    for f in findings:
        gpu = f" gpu {f.gpu}" if f.gpu is not None else ""
        add(f.ts, "finding", f.kind, f"{f.severity} on {f.hostname}{gpu}, score {f.score:.2f} ({f.detector})",
            f.detector)
    for ev in incident.events:
        add(ev.ts, "incident", ev.kind, ev.message, str(ev.data.get("actor", "")))
    for a in incident.actions:
        add(a.created_at, "plan", "action.proposed", f"#{a.id} {a.runbook} on {', '.join(map(str, a.targets))} "
            f"({a.risk} risk)")
        for ap in a.approvals:
            add(ap.decided_at, "approval", f"approval.{ap.decision}",
                f"#{a.id} {ap.decision} by {ap.approver} via {ap.channel}: {ap.reason}", ap.approver)
        add(a.executed_at, "execution", "action.executed", f"#{a.id} {a.runbook}: {a.status}")
        add(a.verified_at, "execution", "action.verified", f"#{a.id} verification: {a.status}")
    audit = session.scalars(select(AuditEvent).where(AuditEvent.incident_id == incident.id)
                            .order_by(AuditEvent.seq).limit(500))
    for record in audit:
        add(record.ts, "audit", record.kind, _audit_message(record), record.actor)
    entries.sort(key=lambda e: e["ts"])
    return entries


def _audit_message(ev: AuditEvent) -> str:
    data = ev.data or {}
    for key in ("reason", "detail", "why", "status", "runbook"):
        if data.get(key):
            return f"{key}: {data[key]}"
    return ""


def incident_view(session: Session, incident_id: int, now: datetime) -> dict[str, Any]:
    incident = get_incident(session, incident_id)
    rationale = [ev.message for ev in incident.events if ev.kind == "agent.plan" and ev.message]
    rationale += [a.rationale for a in incident.actions if a.rationale and a.rationale not in rationale]
    return {
        **incident_summary(incident), "summary": incident.summary, "details": incident.details,
        "rationale": rationale, "timeline": timeline(session, incident),
        "actions": [action_view(a, now) for a in incident.actions],
        "notes": [{"ts": ev.ts.isoformat(), "author": str(ev.data.get("author", "")), "text": ev.message}
                  for ev in incident.events if ev.kind == "note"],  # as written: the timeline's words may be reworded
    }


def audit_view(session: Session, *, limit: int = 200, before: int | None = None,
               incident_id: int | None = None) -> dict[str, Any]:
    stmt = select(AuditEvent)
    if before is not None:
        stmt = stmt.where(AuditEvent.seq < before)
    if incident_id is not None:
        stmt = stmt.where(AuditEvent.incident_id == incident_id)
    events = list(session.scalars(stmt.order_by(AuditEvent.seq.desc()).limit(limit)))
    result: dict[str, Any] = {
        "events": [{"seq": e.seq, "ts": e.ts.isoformat(), "actor": e.actor, "kind": e.kind,
                    "incident_id": e.incident_id, "action_id": e.action_id, "data": e.data, "hash": e.hash}
                   for e in events],
        "next_before": events[-1].seq if len(events) == limit else None,
    }
    return result


def store_version(session: Session) -> str:
    """A fingerprint of what the dashboard shows; it changes whenever an incident, action or audit event does."""
    inc = session.execute(select(func.count(Incident.id), func.max(Incident.updated_at))).one()
    act = session.execute(select(func.count(Action.id), func.max(Action.updated_at))).one()
    seq = session.scalar(select(func.max(AuditEvent.seq)))
    return f"{inc[0]}-{inc[1]}-{act[0]}-{act[1]}-{seq}"
