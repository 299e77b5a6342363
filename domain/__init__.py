"""The vocabulary every part of gpuops shares: incident and action statuses, finding kinds and severities,
the targets an action touches, and the safety budget policy weighs. Plain values only; it imports nothing of
ours, so any package (the agent, the runbooks, the detectors, the connectors) may use it."""

from domain.budget import Budget
from domain.kinds import HARD_KINDS, FindingKind, Severity, is_corroborated, is_hard
from domain.status import ActionStatus, ExecutionStatus, IncidentStatus, ProposalStatus
from domain.target import InvalidTarget, Target, TargetKind

__all__ = [
    "HARD_KINDS", "ActionStatus", "Budget", "ExecutionStatus", "FindingKind", "IncidentStatus", "InvalidTarget",
    "ProposalStatus", "Severity", "Target", "TargetKind", "is_corroborated", "is_hard",
]
