"""A human decision from any channel (dashboard, Slack, CLI): recorded in one transaction, then the incident's
agent thread is resumed off the caller's thread of control (a worker task when a broker is configured, a
background thread in embedded mode), so an HTTP handler answers at once while the drain runs elsewhere."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gpuops.errors import NotFound
from gpuops.execution.approvals import Approver, DecisionOutcome, decide, expire_pending
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
    when = now or datetime.now(tz=UTC)
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


def resume_after_decision(container: Container, incident_id: int, decision: dict[str, Any]) -> None:
    """Hand the incident's thread back to the agent: a task on the broker, or a background thread."""
    if not container.settings.embedded:
        from celery import Celery

        from gpuops.worker.tasks import AGENT_STEP, ROUTES

        app = Celery("gpuops-sender", broker=container.settings.broker_url)
        app.send_task(AGENT_STEP, kwargs={"incident_id": incident_id, "decision": decision},
                      queue=ROUTES[AGENT_STEP])
        return
    from gpuops.worker.agent_bridge import advance_incident

    def _run() -> None:
        try:
            advance_incident(container, incident_id, decision)
        except Exception:
            log.exception("resuming the incident after a decision failed; the sweep executes approved actions",
                          extra={"incident_id": incident_id})

    threading.Thread(target=_run, name=f"resume-incident-{incident_id}", daemon=True).start()


def expire_approvals(container: Container, *, now: datetime | None = None) -> list[int]:
    """Expire actions that waited too long for a decision (their incidents escalate), tell the notifier, and
    give it a chance to send what an outage held back. Returns the expired action ids."""
    when = now or datetime.now(tz=UTC)
    ttl_s = container.policy.approval_ttl_s
    with container.uow() as uow:
        expired = expire_pending(uow.session, now=when, ttl_s=ttl_s)
        uow.commit()
    notifier = container.notifier
    try:
        for action_id in expired:
            notifier.progress(action_id, "expired", f"no decision within {ttl_s / 60:.0f} min; the incident is "
                                                    "escalated to a human")
        notifier.retry_pending()
    except Exception:  # a channel being down never stops expiry
        log.exception("the notifier failed after expiring approvals", extra={"expired": expired})
    return expired
