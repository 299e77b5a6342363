"""A dashboard or API user's decision on an action: recorded through `gpuops.decisions` with the user as the
approver (authorised when their role may decide), then the incident's agent thread is resumed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpuops.decisions import RecordedDecision, record_decision
from gpuops.execution.approvals import Approver
from gpuops.web.auth import SignedIn
from gpuops.wiring import Container

Resume = Callable[[Container, int, dict[str, Any]], None]


def decide_on_action(container: Container, resume: Resume, *, user: SignedIn, action_id: int, decision: str,
                     plan_hash: str, reason: str) -> RecordedDecision:
    """Record the decision on the plan the user saw. A refusal (not authorised, stale plan, closed) comes back in
    the outcome, audited; only an accepted, new decision resumes the agent."""
    approver = Approver(user.name, channel="dashboard", authorised=user.can("decide"))
    recorded = record_decision(container, action_id=action_id, approver=approver, decision=decision,
                               plan_hash=plan_hash, reason=reason)
    if recorded.outcome.refusal is None and not recorded.outcome.duplicate:
        resume(container, recorded.incident_id, {"action_id": action_id, "decision": decision, "by": user.name})
    return recorded
