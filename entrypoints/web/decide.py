"""A dashboard or API user's decision on an action: the pipeline's `decide`, with the user as the approver
(authorised when their role may decide)."""

from __future__ import annotations

from entrypoints.web.auth import SignedIn
from gpuops.decisions import RecordedDecision
from gpuops.execution.approvals import Approver
from gpuops.pipeline import Pipeline


def decide_on_action(pipeline: Pipeline, *, user: SignedIn, action_id: int, decision: str, plan_hash: str,
                     reason: str) -> RecordedDecision:
    """Record the decision on the plan the user saw. A refusal (not authorised, stale plan, closed) comes back in
    the outcome, audited; the pipeline resumes the agent once the action leaves the approval wait."""
    approver = Approver(user.name, channel="dashboard", authorised=user.can("decide"),
                        channel_identity="token" if user.via == "token" else None,
                        refused_because=f"role {user.role}; approver or admin may decide")
    return pipeline.decide(action_id=action_id, approver=approver, decision=decision, plan_hash=plan_hash,
                           reason=reason)
