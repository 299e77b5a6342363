"""What the autoscaler leaves in the store: one incident per Deployment and UTC day ("Autoscaling NS/NAME on DAY",
family `autoscale`), holding that day's scale actions with policy's verdict, the human decisions on those above
the budget, and their executions, so an operator reads one page per Deployment and day instead of one incident
per decision. Between decisions the incident is resolved ("replicas as planned")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import ActionStatus, IncidentStatus, Target, TargetKind
from gpuops.incidents.lifecycle import add_timeline, can_transition, transition
from gpuops.policy.autoscale import AUTOSCALE_FAMILY, ScaleVerdict
from gpuops.store.audit import append_event
from gpuops.store.models import Action, AutoscaleCycle, Incident
from runbooks import Catalogue, Plan, RunbookContext
from runbooks.scale import OwnerBounds

AUTOSCALE_SCOPE = "service"
ACTOR = "autoscaler"
RUNBOOK = "scale_deployment"


def deployment_target(namespace: str, name: str) -> Target:
    return Target(kind=TargetKind.DEPLOYMENT, namespace=namespace, name=name)


def is_autoscale_incident(session: Session, incident_id: int) -> bool:
    incident = session.get(Incident, incident_id)
    return incident is not None and incident.family == AUTOSCALE_FAMILY


def incident_for(session: Session, namespace: str, name: str, now: datetime) -> Incident:
    """The Deployment's incident of this UTC day, opened (or reopened) and under investigation."""
    day = now.date().isoformat()
    key = f"{AUTOSCALE_FAMILY}/{namespace}/{name}/{day}"
    incident = session.scalars(select(Incident).where(Incident.dedup_key == key)).first()
    if incident is None:
        incident = Incident(dedup_key=key, scope=AUTOSCALE_SCOPE, family=AUTOSCALE_FAMILY, hostname=None, gpu=None,
                            status=IncidentStatus.OPEN, severity="info",
                            title=f"Autoscaling {namespace}/{name} on {day}",
                            summary=f"gpuops' scale decisions for {namespace}/{name} on {day} (UTC)",
                            opened_at=now, updated_at=now, details={"deployment": f"{namespace}/{name}"})
        session.add(incident)
        session.flush()
        append_event(session, actor=ACTOR, kind="incident.opened", incident_id=incident.id,
                     data={"deployment": f"{namespace}/{name}", "family": AUTOSCALE_FAMILY}, ts=now)
    elif incident.status in IncidentStatus.CLOSED:
        transition(session, incident, IncidentStatus.OPEN, reason="a new scale decision", actor=ACTOR, now=now)
    if incident.status in (IncidentStatus.OPEN, IncidentStatus.ESCALATED, IncidentStatus.VERIFYING):
        transition(session, incident, IncidentStatus.INVESTIGATING, reason="the autoscaler decides", actor=ACTOR,
                   now=now)
    return incident


def last_scaled_at(session: Session, namespace: str, name: str) -> datetime | None:
    """When gpuops last changed this Deployment's replicas (any scale action of it that ran)."""
    key = deployment_target(namespace, name).key()
    times = [a.executed_at for a in session.scalars(select(Action).where(
        Action.runbook == RUNBOOK, Action.executed_at.is_not(None),
        Action.status.in_(ActionStatus.EXECUTED)).order_by(Action.executed_at.desc()).limit(50))
        if key in (a.targets or [])]
    return max((t for t in times if t is not None), default=None)


def awaiting_decision(session: Session) -> dict[str, int]:
    """Deployment key -> the autoscale action waiting for a human (one at a time per Deployment)."""
    rows = session.execute(select(Action.id, Action.targets).join(Incident).where(
        Incident.family == AUTOSCALE_FAMILY, Action.status == ActionStatus.AWAITING_APPROVAL))
    out: dict[str, int] = {}
    for action_id, targets in rows:
        for key in targets or []:
            out.setdefault(str(key), int(action_id))
    return out


def record_decision(session: Session, *, verdict: ScaleVerdict, bounds: OwnerBounds, reason: str,
                    catalogue: Catalogue, ctx: RunbookContext, now: datetime,
                    busy_pods: Mapping[str, int] | None = None) -> Action:
    """The action for one verdict (`auto`: approved by policy; `approval`: waiting for one human), audited; a
    scale-down carries the pods serving requests (`busy_pods`), which it spares."""
    incident = incident_for(session, verdict.namespace, verdict.name, now)
    params: dict[str, Any] = {"replicas": verdict.replicas, "reason": reason[:500], "autoscaled": bounds.model_dump()}
    if busy_pods:
        params["busy_pods"] = dict(sorted(busy_pods.items()))
    plan = catalogue.validate(Plan(runbook=RUNBOOK, params=params,
                                   targets=(deployment_target(verdict.namespace, verdict.name),)))
    ctx.incident_id = incident.id
    risk = catalogue.risk_for(plan, ctx).value
    diff = catalogue.dry_run(plan, ctx)
    auto = verdict.gate == "auto"
    status = ActionStatus.APPROVED if auto else ActionStatus.AWAITING_APPROVAL
    stamp = now.strftime("%Y%m%dT%H%M%S")
    action = Action(incident_id=incident.id, runbook=RUNBOOK, parameters=plan.params,
                    targets=[t.key() for t in plan.targets], plan_hash=plan.plan_hash(),
                    idempotency_key=f"autoscale:{verdict.key}:{stamp}:{verdict.gate}:{verdict.replicas}"[:128],
                    status=status, risk=risk, rationale=reason, diff=asdict(diff), created_at=now, updated_at=now,
                    approvals_required=0 if auto else 1,
                    verdict={"allowed": True, "gate": "auto" if auto else "one_approver", "reasons": verdict.reasons,
                             "policy": "autoscale"})
    session.add(action)
    session.flush()
    verdict_data: dict[str, Any] = {"runbook": RUNBOOK, "targets": action.targets, "gate": verdict.gate,
                                    "from": verdict.current, "to": verdict.replicas, "reasons": verdict.reasons}
    append_event(session, actor="policy", kind="policy.verdict", incident_id=incident.id, action_id=action.id,
                 data=verdict_data, ts=now)
    append_event(session, actor=ACTOR, kind="action.proposed", incident_id=incident.id, action_id=action.id,
                 data={"runbook": RUNBOOK, "params": plan.params, "targets": action.targets,
                       "plan_hash": action.plan_hash, "rationale": reason, "risk": risk, "status": status,
                       "diff": action.diff}, ts=now)
    add_timeline(session, incident, kind="autoscale.decision", now=now,
                 message=f"{verdict.current} → {verdict.replicas} replicas: {reason}; "
                         + ("approved by policy" if auto else "waits for a human") + f" ({'; '.join(verdict.reasons)})",
                 data={"action_id": action.id, **verdict_data})
    if not auto and can_transition(incident.status, IncidentStatus.AWAITING_APPROVAL):
        transition(session, incident, IncidentStatus.AWAITING_APPROVAL,
                   reason=f"action {action.id}: {verdict.replicas} replicas need a human (above the budget)",
                   actor="policy", now=now)
    return action


def settle(session: Session, incident_id: int, now: datetime) -> None:
    """After an action ran or a decision ended one: the incident waits again for a human while one of its actions
    does; otherwise it is resolved until the next decision."""
    incident = session.get(Incident, incident_id)
    if incident is None or incident.family != AUTOSCALE_FAMILY:
        return
    pending = [a for a in incident.actions if a.status == ActionStatus.AWAITING_APPROVAL]
    if pending:
        for step in (IncidentStatus.INVESTIGATING, IncidentStatus.AWAITING_APPROVAL):
            if incident.status != step and can_transition(incident.status, step):
                transition(session, incident, step, reason=f"action {pending[0].id} waits for a human", actor=ACTOR,
                           now=now)
        return
    last = incident.actions[-1] if incident.actions else None
    what = f"action {last.id} {last.status}" if last is not None else "nothing to do"
    if incident.status == IncidentStatus.ESCALATED:
        return  # a failed scale stays with a human
    if can_transition(incident.status, IncidentStatus.RESOLVED):
        transition(session, incident, IncidentStatus.RESOLVED, reason=f"replicas as decided ({what})", actor=ACTOR,
                   now=now)


def claim_cycle(session: Session, *, now: float, min_gap_s: float, worker: str) -> float | None:
    """Claim the cycle at `now` (under the row's lock, in the caller's transaction): None when claimed, else when
    the cycle last ran (less than `min_gap_s` ago: another worker has this period)."""
    row = session.execute(select(AutoscaleCycle).where(AutoscaleCycle.id == 1).with_for_update()).scalar_one_or_none()
    if row is None:
        row = AutoscaleCycle(id=1, last_run=0.0, worker="")
        session.add(row)
        session.flush()
    if now < row.last_run + min_gap_s:
        return row.last_run
    row.last_run, row.worker = now, worker[:253]
    return None
