"""The graph's state: plain JSON values only, because every step is checkpointed in the database and read
back by whichever process resumes the incident (an approval from Slack, the dashboard or the CLI)."""

from __future__ import annotations

from typing import Any, TypedDict


class IncidentState(TypedDict, total=False):
    """One incident's investigation, plan and execution. Every node returns only the fields it changes."""

    incident_id: int
    """The incident this thread works on; the thread id is derived from it (see `thread_id`)."""

    incident: dict[str, Any]
    """Snapshot read at triage: id, scope, family, hostname, gpu, severity, title, details, evidence."""

    fault: str
    """The fault kind the rules table knows (`xid79`, `ecc_sbe_storm`, `hung_job`, …), from family and evidence."""

    agenda: list[str]
    """Investigation tools still to run, in order; the investigate loop pops one per step."""

    evidence: list[dict[str, Any]]
    """Tool results so far, each `{"tool", "status" (ok|error|no_data), "summary", "data"}`."""

    steps: int
    """Graph steps taken; at `AgentLimits.max_steps` the routers escalate instead of looping on."""

    plan: list[dict[str, Any]]
    """The ordered actions to propose (PlannedAction JSON); each goes through policy and approval in turn."""

    rationale: str
    """Why this plan, citing the evidence."""

    planner: str
    """Which planner produced the plan: `rules` or `llm`."""

    notes: list[str]
    """Planner rejections, fallbacks and limits met, for the timeline and the report."""

    gpu_only: bool
    """The plan was narrowed to its GPU alone after the healthy-GPU floor refused its node (once per round)."""

    cursor: int
    """Index in `plan` of the action being proposed, approved or executed."""

    hold: str
    """The current action's soak before it is proposed: held, over, none (nothing holds it), stale, closed."""

    proposal: dict[str, Any]
    """The execution side's answer for the current action: action_id, status, verdict, diff, reasons."""

    approval: str
    """The current action's stored status after the approval wait (approved, rejected, expired, …)."""

    executions: list[dict[str, Any]]
    """One ExecutionView (JSON) per executed action, in order."""

    execution_wait: str
    """While another executor holds the current action's claim: who, from the execution side; else empty."""

    outcome: str
    """Final: `resolved`, `escalated` or `closed` (nothing to do); empty while the graph runs."""

    reason: str
    """Why the graph ended as it did."""


def thread_id(incident_id: int) -> str:
    """The checkpointer thread of an incident: any process can resume it knowing only the incident id."""
    return f"incident-{incident_id}"
