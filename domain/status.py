"""The statuses of incidents and actions, and the answers of proposing and executing an action. Each is a
`StrEnum`: a member equals its string, so stored rows, JSON and audit records read as they always did. The
named groups of statuses are defined here once, as frozensets on the enum (`ActionStatus.FINISHED`)."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class IncidentStatus(StrEnum):
    """Where an incident stands in its lifecycle (the transitions live in gpuops.incidents.lifecycle)."""

    OPEN = "open"
    INVESTIGATING = "investigating"
    AWAITING_APPROVAL = "awaiting_approval"
    EXECUTING = "executing"
    VERIFYING = "verifying"
    RESOLVED = "resolved"
    ESCALATED = "escalated"
    SUPPRESSED = "suppressed"

    ACTIVE: ClassVar[frozenset[IncidentStatus]]
    """Still needs attention: gpuops or a human works on it."""
    CLOSED: ClassVar[frozenset[IncidentStatus]]
    """Nothing left to do unless it recurs."""


IncidentStatus.CLOSED = frozenset({IncidentStatus.RESOLVED, IncidentStatus.SUPPRESSED})
IncidentStatus.ACTIVE = frozenset(IncidentStatus) - IncidentStatus.CLOSED


class ActionStatus(StrEnum):
    """Where a proposed runbook action stands. Every status is in exactly one of OPEN, RUNNING and FINISHED."""

    PROPOSED = "proposed"                    # stored, policy not yet asked
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"                    # by a human
    EXPIRED = "expired"                      # no decision in time
    DENIED = "denied"                        # by policy (budget, rate, cool-down, freeze, precondition)
    ESCALATED = "escalated"                  # policy handed the incident to a human
    EXECUTING = "executing"
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    REFUSED = "refused"                      # the executor would not run it (stale plan, expired approval)
    DRY_RUN = "dry_run"                      # rehearsed in dry-run mode; nothing changed

    OPEN: ClassVar[frozenset[ActionStatus]]
    """Not run yet and still waiting on policy or people."""
    RUNNING: ClassVar[frozenset[ActionStatus]]
    """Claimed by an executor: its steps or its verification are under way."""
    FINISHED: ClassVar[frozenset[ActionStatus]]
    """Nothing more happens to it: a second execution request answers `already_done`."""
    EXECUTED: ClassVar[frozenset[ActionStatus]]
    """Touched the cluster (or is touching it): counts for cool-downs, repeat offenders and the unsafe tally."""
    VERIFICATION_FAILED: ClassVar[frozenset[ActionStatus]]
    """Ran and failed its verification: counts towards the circuit breaker."""
    STOPPED: ClassVar[frozenset[ActionStatus]]
    """Finished without running, because a person, policy or the executor said no (or no one said yes in time)."""
    FINISHED_AFTER_PROPOSAL: ClassVar[frozenset[ActionStatus]]
    """Finished by something after its proposal (a decision, an expiry, a run). A fresh proposal never has one
    of these, so a proposal answered with one is an earlier action the store handed back."""


ActionStatus.OPEN = frozenset({ActionStatus.PROPOSED, ActionStatus.AWAITING_APPROVAL, ActionStatus.APPROVED})
ActionStatus.RUNNING = frozenset({ActionStatus.EXECUTING, ActionStatus.VERIFYING})
ActionStatus.FINISHED = frozenset(ActionStatus) - ActionStatus.OPEN - ActionStatus.RUNNING
ActionStatus.VERIFICATION_FAILED = frozenset({ActionStatus.FAILED, ActionStatus.ROLLED_BACK})
ActionStatus.EXECUTED = ActionStatus.RUNNING | ActionStatus.VERIFICATION_FAILED | {ActionStatus.SUCCEEDED}
ActionStatus.STOPPED = frozenset({ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.DENIED,
                                  ActionStatus.ESCALATED, ActionStatus.REFUSED})


class ProposalStatus(StrEnum):
    """Policy's answer when an action is proposed (`invalid`: it never reached policy)."""

    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    DENIED = "denied"
    ESCALATED = "escalated"
    INVALID = "invalid"


ActionStatus.FINISHED_AFTER_PROPOSAL = frozenset(
    s for s in ActionStatus.FINISHED if s.value not in {p.value for p in ProposalStatus})


class ExecutionStatus(StrEnum):
    """How a request to execute an action ended, for the caller that asked."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    REFUSED = "refused"
    ALREADY_DONE = "already_done"            # it had finished before; nothing ran again
    IN_PROGRESS = "in_progress"              # another executor holds the claim
    WAITING = "waiting"                      # the budgets gpuops' own nodes hold refuse it now: it waits for them
    DRY_RUN = "dry_run"
