"""The values runbooks exchange with their callers: risks, targets, plans, diffs and step results. Targets
belong to the shared vocabulary (domain.target); they are re-exported here for the runbooks' callers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from domain.target import InvalidTarget, Target, TargetKind
from runbooks.errors import InvalidPlan

__all__ = ["Diff", "InvalidTarget", "Plan", "Risk", "StepResult", "Target", "TargetKind"]


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RISK_ORDER.index(self)

    def at_least(self, other: Risk) -> Risk:
        """The higher of the two risks."""
        return self if self.rank >= other.rank else other


_RISK_ORDER = (Risk.LOW, Risk.MEDIUM, Risk.HIGH)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Plan:
    """One proposed action: which runbook, with which parameters, on which targets."""

    runbook: str
    params: dict[str, Any]
    targets: tuple[Target, ...]

    def plan_hash(self) -> str:
        """sha256 of the canonical JSON of runbook, params and the sorted target keys."""
        body = {
            "runbook": self.runbook,
            "params": self.params,
            "targets": sorted(t.key() for t in self.targets),
        }
        return hashlib.sha256(_canonical(body).encode()).hexdigest()

    @property
    def target(self) -> Target:
        """The single target of a one-target runbook."""
        if len(self.targets) != 1:
            raise InvalidPlan(f"runbook {self.runbook} takes exactly one target, got {len(self.targets)}")
        return self.targets[0]


@dataclass
class Diff:
    """What a dry run found: the changes it would make and what they would cost."""

    changes: list[str] = field(default_factory=list)
    pods_affected: list[str] = field(default_factory=list)
    gpus_affected: int = 0
    gpu_hours_at_risk: float = 0.0
    blockers: list[str] = field(default_factory=list)

    def merge(self, other: Diff) -> Diff:
        return Diff(
            changes=self.changes + other.changes,
            pods_affected=self.pods_affected + [p for p in other.pods_affected if p not in self.pods_affected],
            gpus_affected=self.gpus_affected + other.gpus_affected,
            gpu_hours_at_risk=self.gpu_hours_at_risk + other.gpu_hours_at_risk,
            blockers=self.blockers + other.blockers,
        )


@dataclass
class StepResult:
    """The outcome of one step (or a whole execute / verify / rollback)."""

    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
