"""A human decision from any channel (dashboard, Slack, CLI), recorded in one transaction. The pipeline's
`decide` calls this and then hands the incident's thread on to its dispatcher."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from domain import clock
from gpuops.errors import NotFound
from gpuops.execution.approvals import Approver, DecisionOutcome, decide
from gpuops.store.models import Action
from gpuops.wiring import Container

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedDecision:
    incident_id: int
    outcome: DecisionOutcome


def record_decision(container: Container, *, action_id: int, approver: Approver, decision: str,
                    plan_hash: str | None, reason: str, now: datetime | None = None) -> RecordedDecision:
    """Record `approver`'s decision on the plan they saw (`plan_hash`; None = the stored one, for channels that
    show the current plan at the moment of the click). A refusal is committed too (its audit record) and
    returned in the outcome; call `outcome.raise_for_refusal()` to turn it into an error."""
    when = now or clock.now()
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        if action is None:
            raise NotFound(f"action {action_id} does not exist")
        incident_id = action.incident_id
        outcome = decide(uow.session, action_id=action_id, approver=approver, decision=decision,
                         plan_hash=plan_hash or action.plan_hash, reason=reason, now=when,
                         ttl_s=container.policy.approval_ttl_s)
        uow.commit()
    if outcome.refusal is None and not outcome.duplicate:
        try:
            container.notifier.decision_recorded(action_id)
        except Exception:  # a channel being down never undoes a decision
            log.exception("could not tell the notifier about a decision", extra={"action_id": action_id})
    return RecordedDecision(incident_id, outcome)
