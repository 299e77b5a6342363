"""The soak before a node action. A bad driver rollout or an environment event reaches nodes a minute or two
apart; acting on the first node at once would cordon and drain a healthy node for a fleet-wide cause. So a
disruptive node action is proposed only once `soak_s` of telemetry after its incident opened has been
examined by every detection shard (policy's `soak_until`); meanwhile the agent's thread waits, and the sweep
(`due_holds`) resumes it when the data has caught up. By then the incident may have been folded into a fleet
incident, or policy's common-cause hold sees the same family elsewhere, and nothing touches the node.

The hold counts data time, not the wall clock: detection that lags does not shorten it. Detection that has
stopped would hold forever, so a hold whose end is `STALE_AFTER_S` behind the wall clock is released as
stale and the incident goes to a human."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import IncidentStatus
from gpuops.detection import examined_until
from gpuops.execution.service import (
    BUDGET_WAIT_KEY,
    ExecutionDeps,
    action_spec,
    budget_waited_s,
    end_budget_wait,
    fleet_facts,
    hold_for_budget,
)
from gpuops.incidents.lifecycle import add_timeline
from gpuops.policy import ActionSpec, budget_wait, soak_until
from gpuops.store.audit import append_event
from gpuops.store.models import Incident
from gpuops.store.uow import UnitOfWork
from runbooks import InvalidPlan, Plan, UnknownRunbook

STALE_AFTER_S = 900.0


@dataclass(frozen=True)
class HoldOutcome:
    status: str          # none (nothing holds it) | held | over | stale | closed
    until: datetime | None
    reason: str


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def hold(uow: UnitOfWork, *, incident_id: int, plan: Plan, deps: ExecutionDeps, shards: int) -> HoldOutcome:
    """Whether `plan` for the incident must wait now. Records the hold on the incident (`held_until`, a
    timeline entry the first time) and clears it once it is over. Runs in the caller's transaction."""
    session = uow.session
    incident = session.get(Incident, incident_id)
    if incident is None or incident.status in IncidentStatus.CLOSED:
        return HoldOutcome("closed", None, f"incident {incident_id} is "
                           f"{'gone' if incident is None else incident.status}; nothing to do")
    try:
        spec = action_spec(deps.catalogue.validate(plan), "n/a", deps.catalogue, deps.cluster)
    except (UnknownRunbook, InvalidPlan):
        return HoldOutcome("none", None, "")  # the proposal reports what is wrong with it
    until = soak_until(incident, spec, deps.policy)
    seen = _ts(examined_until(session, shards))
    now = datetime.fromtimestamp(deps.clock(), tz=UTC)
    if until is None:
        return _budget_hold(uow, incident, plan, spec, deps, now) or _clear(incident, HoldOutcome(
            "none", None, ""))
    if seen is not None and seen >= until:
        return _budget_hold(uow, incident, plan, spec, deps, now) or _clear(incident, HoldOutcome(
            "over", until, f"soaked {deps.policy.soak_s:.0f}s of telemetry: examined up to {seen.isoformat()}"))
    if now >= until + timedelta(seconds=STALE_AFTER_S):
        return _clear(incident, HoldOutcome(
            "stale", until, f"detection has examined data only up to {seen.isoformat() if seen else 'nothing'}, "
                            f"{STALE_AFTER_S / 60:.0f} min past the soak's end ({until.isoformat()}): the fleet "
                            "cannot be checked for a common cause, so a human decides"))
    if incident.held_until != until:
        incident.held_until = until
        message = (f"{plan.runbook} on {', '.join(spec.target_nodes)} held until telemetry up to "
                   f"{until.isoformat()} is examined ({deps.policy.soak_s:.0f}s soak): a common cause would reach "
                   "other nodes first")
        add_timeline(session, incident, kind="agent.held", message=message, now=now,
                     data={"runbook": plan.runbook, "until": until.isoformat()})
        append_event(session, actor="policy", kind="agent.held", incident_id=incident.id,
                     data={"runbook": plan.runbook, "targets": list(spec.target_keys), "until": until.isoformat()},
                     ts=now)
    return HoldOutcome("held", until, f"soak until {until.isoformat()}")


def _budget_hold(uow: UnitOfWork, incident: Incident, plan: Plan, spec: ActionSpec, deps: ExecutionDeps,
                 now: datetime) -> HoldOutcome | None:
    """Wait, up to policy's `budget_wait_s`, while the action fits the budgets only once gpuops'
    own nodes come back (`policy.budget_wait`); re-checked every `BUDGET_RECHECK_S`. None when nothing makes it
    wait, or the wait is over: then policy decides, and a refusal names the budget that is still spent."""
    session = uow.session
    started = incident.details.get(BUDGET_WAIT_KEY)
    if not (spec.disruptive and spec.target_nodes) and started is None:
        return None  # only taking nodes out can wait on the budget: no need to read the cluster
    reason = budget_wait(session, spec=spec, facts=fleet_facts(deps.cluster), config=deps.policy)
    if reason is None:
        if started is not None:
            _end_budget_wait(session, incident, "it fits the budgets now", now, plan, spec)
        return None
    what = f"{plan.runbook} on {', '.join(spec.target_nodes)}"
    until = hold_for_budget(session, incident, reason, now, deps.policy, plan.runbook, what)
    if until is None:
        waited = budget_waited_s(incident, now) or 0.0
        _end_budget_wait(session, incident, f"waited {waited / 60:.0f} min for gpuops' own nodes to come back and "
                                            f"the budget is still spent: {reason}", now, plan, spec)
        return None
    if started is None:
        append_event(session, actor="policy", kind="agent.held", incident_id=incident.id,
                     data={"runbook": plan.runbook, "targets": list(spec.target_keys), "budget": reason,
                           "until": until.isoformat()}, ts=now)
    return HoldOutcome("held", until, f"budget wait: {reason}")


def _end_budget_wait(session: Session, incident: Incident, why: str, now: datetime, plan: Plan,
                     spec: ActionSpec) -> None:
    end_budget_wait(session, incident, f"{plan.runbook} on {', '.join(spec.target_nodes)} stops waiting for the "
                                       f"budget: {why}", now, plan.runbook)


def _clear(incident: Incident, outcome: HoldOutcome) -> HoldOutcome:
    if incident.held_until is not None:
        incident.held_until = None
    return outcome


def due_holds(session: Session, *, shards: int, now: datetime) -> list[int]:
    """Incidents whose hold is over (or stale): their threads are to be resumed."""
    seen = _ts(examined_until(session, shards))
    stale_before = now - timedelta(seconds=STALE_AFTER_S)
    rows = session.execute(select(Incident.id, Incident.held_until).where(
        Incident.held_until.is_not(None), Incident.status.in_(IncidentStatus.ACTIVE)).order_by(Incident.id))
    return [incident_id for incident_id, until in rows
            if until is not None and ((seen is not None and until <= seen) or until <= stale_before)]
