"""Human decisions on actions. An approval binds to the plan hash the human saw and expires; high-risk
plans need two distinct people (counted by person, whichever channels they used); a double click is idempotent;
every refusal is audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import ActionStatus, IncidentStatus
from gpuops.errors import Conflict, GpuopsError, NotFound
from gpuops.incidents.lifecycle import can_transition, transition
from gpuops.store.audit import append_event
from gpuops.store.models import Action, Approval


class NotAuthorised(GpuopsError):
    """The person deciding is not an approver."""


@dataclass(frozen=True)
class Approver:
    """Who decides (the person: their dashboard user name), through which channel, and whether they may.
    `channel_identity` is who the channel saw (a Slack user id, the token a script used); it goes into the audit
    trail, while approvals are counted per person. `refused_because` says what to change when they may not."""

    identity: str
    channel: str  # slack | dashboard | cli
    authorised: bool
    channel_identity: str | None = None
    refused_because: str = ""


@dataclass(frozen=True)
class DecisionOutcome:
    """The result of a decision. A refusal is a result, not an exception, so that the caller commits its
    audit record; `raise_for_refusal()` turns it into our error afterwards."""

    action_id: int
    status: str               # the action's status after the decision
    approvals: int            # valid approvals so far
    approvals_required: int
    duplicate: bool = False   # the same person had already decided
    refusal: str | None = None
    refusal_kind: str | None = None  # not_authorised | stale_plan | closed

    def raise_for_refusal(self) -> None:
        if self.refusal_kind == "not_authorised":
            raise NotAuthorised(self.refusal or "not authorised")
        if self.refusal is not None:
            raise Conflict(self.refusal)


def valid_approvals(action: Action, now: datetime) -> list[Approval]:
    """Approvals that still count: approve decisions on the current plan hash, not expired."""
    return [a for a in action.approvals
            if a.decision == "approve" and a.plan_hash == action.plan_hash and a.expires_at > now]


def decide(session: Session, *, action_id: int, approver: Approver, decision: str, plan_hash: str,
           reason: str, now: datetime, ttl_s: float) -> DecisionOutcome:
    """Record `approver`'s decision on the plan they saw (`plan_hash`). Runs in the caller's transaction."""
    if decision not in ("approve", "reject"):
        raise GpuopsError(f"decision must be approve or reject, not {decision!r}")
    action = session.execute(select(Action).where(Action.id == action_id).with_for_update()).scalar_one_or_none()
    if action is None:
        raise NotFound(f"action {action_id} does not exist")
    audit = {"approver": approver.identity, "channel": approver.channel, "decision": decision,
             "plan_hash_seen": plan_hash, "reason": reason}
    if approver.channel_identity is not None:
        audit["channel_identity"] = approver.channel_identity

    def refuse(kind: str, message: str) -> DecisionOutcome:
        append_event(session, actor=approver.identity, kind="approval.refused", incident_id=action.incident_id,
                     action_id=action.id, data={**audit, "why": kind, "detail": message}, ts=now)
        return DecisionOutcome(action.id, action.status, len(valid_approvals(action, now)),
                               action.approvals_required, refusal=message, refusal_kind=kind)

    if not approver.authorised:
        because = f" ({approver.refused_because})" if approver.refused_because else ""
        return refuse("not_authorised", f"{approver.identity} is not allowed to approve or reject actions{because}")
    existing = next((a for a in action.approvals if a.approver == approver.identity), None)
    if existing is not None and existing.plan_hash == plan_hash and existing.decision == decision:
        return DecisionOutcome(action.id, action.status, len(valid_approvals(action, now)),
                               action.approvals_required, duplicate=True)
    if plan_hash != action.plan_hash:
        return refuse("stale_plan", f"action {action.id}'s plan changed after it was shown to you; "
                                    "review the new plan")
    if action.status != ActionStatus.AWAITING_APPROVAL:
        return refuse("closed", f"action {action.id} is {action.status}; it no longer takes decisions")
    if existing is not None:  # same person, older plan: replace their decision
        session.delete(existing)
        session.flush()
    session.add(Approval(action_id=action.id, approver=approver.identity, channel=approver.channel,
                         decision=decision, plan_hash=plan_hash, reason=reason, decided_at=now,
                         expires_at=now + timedelta(seconds=ttl_s)))
    session.flush()
    session.refresh(action, ["approvals"])
    append_event(session, actor=approver.identity, kind=f"approval.{decision}", incident_id=action.incident_id,
                 action_id=action.id, data=audit, ts=now)
    incident = action.incident
    if decision == "reject":
        action.status = ActionStatus.REJECTED
        transition(session, incident, IncidentStatus.ESCALATED,
                   reason=f"plan rejected by {approver.identity}: {reason}", actor=approver.identity, now=now)
    elif len(valid_approvals(action, now)) >= action.approvals_required:
        action.status = ActionStatus.APPROVED
    count = len(valid_approvals(action, now))
    return DecisionOutcome(action.id, action.status, count, action.approvals_required)


def expire_pending(session: Session, *, now: datetime, ttl_s: float) -> list[int]:
    """Actions that waited for approval longer than `ttl_s`: mark them expired and escalate their incident."""
    stmt = select(Action).where(Action.status == ActionStatus.AWAITING_APPROVAL,
                                Action.created_at <= now - timedelta(seconds=ttl_s))
    expired = []
    for action in session.scalars(stmt):
        action.status = ActionStatus.EXPIRED
        append_event(session, actor="policy", kind="approval.expired", incident_id=action.incident_id,
                     action_id=action.id, data={"waited_s": ttl_s}, ts=now)
        if can_transition(action.incident.status, IncidentStatus.ESCALATED):  # a suppressed incident stays folded
            transition(session, action.incident, IncidentStatus.ESCALATED,
                       reason=f"approval of action {action.id} expired", actor="policy", now=now)
        expired.append(action.id)
    return expired
