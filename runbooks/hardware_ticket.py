"""open_hardware_ticket: record an RMA request with its evidence (returned for the caller to persist) and
POST it as JSON to the configured webhook, if any."""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from runbooks.context import RunbookContext
from runbooks.cordon import find_node
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind


class TicketParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpu: int | None = Field(default=None, ge=0, description="the failing GPU's index; None for a node-level fault")
    summary: str = Field(min_length=1, max_length=500, description="one line: what failed")
    fault: str = Field(default="", max_length=100, description="the fault kind, e.g. xid79, row_remap")
    evidence: dict[str, Any] = Field(default_factory=dict, description="the numbers that justify the request")
    severity: Literal["warning", "critical"] = "critical"


TICKET = Runbook[TicketParams](
    RunbookDefinition(
        name="open_hardware_ticket",
        title="Open a hardware (RMA) ticket",
        description="Record an RMA request for a node or GPU with its evidence and send it to the hardware webhook.",
        risk=Risk.LOW,
        target_kind=TargetKind.NODE,
        params_model=TicketParams,
        disruptive=False,
        auto_approvable=True,
        expected_effect="an RMA request is recorded (and accepted by the webhook when one is configured)",
        verify_deadline_s=5,
        has_rollback=False,
    )
)


def ticket_id(plan: Plan) -> str:
    return f"rma-{plan.plan_hash()[:16]}"


def ticket_body(plan: Plan, params: TicketParams, ctx: RunbookContext) -> dict[str, Any]:
    return {
        "id": ticket_id(plan),
        "node": plan.target.node,
        "gpu": params.gpu,
        "summary": params.summary,
        "fault": params.fault,
        "severity": params.severity,
        "evidence": params.evidence,
        "incident_id": ctx.incident_id,
        "requested_by": ctx.actor,
        "requested_at": ctx.clock(),
    }


@TICKET.precondition
def _pre(plan: Plan, params: TicketParams, ctx: RunbookContext) -> list[str]:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is not None and params.gpu is not None and params.gpu >= node.gpu_capacity:
        problems.append(f"{node.name} has {node.gpu_capacity} GPUs; there is no GPU {params.gpu}")
    return problems


@TICKET.dry_run
def _dry(plan: Plan, params: TicketParams, ctx: RunbookContext) -> Diff:
    what = f"GPU {params.gpu} on {plan.target.node}" if params.gpu is not None else str(plan.target.node)
    changes = [f"record RMA request {ticket_id(plan)} for {what}: {params.summary}"]
    url = ctx.settings.hardware_ticket_webhook_url
    if url:
        changes.append(f"POST it to the hardware-ticket webhook at {httpx.URL(url).host}")
    return Diff(changes=changes)


@TICKET.step
def open_ticket(plan: Plan, params: TicketParams, ctx: RunbookContext) -> StepResult:
    """Record the request (in the result, for the caller to persist) and send it to the webhook if any.
    A webhook failure fails the step but the recorded request is still in its data."""
    ticket = ticket_body(plan, params, ctx)
    recorded = f"RMA request {ticket['id']} recorded"
    url = ctx.settings.hardware_ticket_webhook_url
    if not url:
        return StepResult(
            True, f"{recorded}; no hardware-ticket webhook configured", {"ticket": ticket, "webhook": None}
        )
    host = httpx.URL(url).host
    try:
        response = httpx.post(url, json=ticket, timeout=ctx.settings.hardware_ticket_timeout_s)
    except httpx.HTTPError as exc:
        return StepResult(
            False,
            f"{recorded}, but the hardware-ticket webhook at {host} could not be reached ({exc}); send it again later",
            {"ticket": ticket, "webhook": {"error": str(exc)}},
        )
    if response.is_error:
        return StepResult(
            False,
            f"{recorded}, but the hardware-ticket webhook at {host} answered HTTP {response.status_code}; "
            "send it again later",
            {"ticket": ticket, "webhook": {"status": response.status_code}},
        )
    return StepResult(
        True,
        f"{recorded} and sent to the hardware-ticket webhook at {host} (HTTP {response.status_code})",
        {"ticket": ticket, "webhook": {"status": response.status_code}},
    )


@TICKET.verify
def _verify(plan: Plan, params: TicketParams, ctx: RunbookContext) -> StepResult:
    """The ticket lives outside the cluster: execute has already checked the webhook accepted it."""
    return StepResult(True, f"RMA request {ticket_id(plan)} recorded; nothing in the cluster to check")
