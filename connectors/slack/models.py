"""Plain data the Slack connector renders and receives: what an approval prompt shows, and a button click."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MessageRef:
    """Where a posted message lives: its channel and its timestamp (Slack's message id)."""

    channel: str
    ts: str


@dataclass(frozen=True)
class Decision:
    """One person's decision as shown on the message."""

    who: str
    decision: str        # approve | reject
    at: str              # ISO 8601 UTC
    channel: str         # slack | dashboard | cli
    reason: str = ""


@dataclass(frozen=True)
class ApprovalPrompt:
    """Everything an approval message shows, read from the store by the caller."""

    action_id: int
    plan_hash: str
    incident_id: int
    title: str
    severity: str
    summary: str
    location: str                         # e.g. "gpu-node-003 GPU 2"
    evidence: list[tuple[str, str]]       # (label, number with unit) pairs
    runbook: str
    targets: list[str]
    params: dict[str, Any]
    risk: str
    rationale: str
    pods_evicted: int
    gpus_affected: int
    gpu_hours_at_risk: float
    budget: list[tuple[str, str]]         # (label, "used/limit" text)
    status: str                           # the action's status
    approvals_required: int
    decisions: list[Decision] = field(default_factory=list)
    dashboard_url: str | None = None
    expired_at: str | None = None


@dataclass(frozen=True)
class ButtonClick:
    """An Approve or Reject click, as Slack sent it (already verified by its signature)."""

    user_id: str
    user_name: str
    decision: str          # approve | reject
    action_id: int
    plan_hash: str
    channel: str | None
    message_ts: str | None
    response_url: str | None


@dataclass(frozen=True)
class ClickReply:
    """What the person who clicked is told privately (None: nothing; the message update says it all)."""

    ephemeral_text: str | None = None
