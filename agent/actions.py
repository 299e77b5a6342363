"""The agent's vocabulary for actions: a planned runbook invocation as plain data (it lives in the
checkpointed graph state), the agent's view of a runbook, and what the execution side answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlannedAction:
    """One runbook invocation: the runbook's name, its parameters, and its targets as stable keys
    (`node/N`, `gpu/N/I`, `pod/NS/NAME`, `deployment/NS/NAME`, `none`)."""

    runbook: str
    params: dict[str, Any]
    targets: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"runbook": self.runbook, "params": dict(self.params), "targets": list(self.targets)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlannedAction:
        return cls(str(data["runbook"]), dict(data.get("params") or {}), tuple(str(t) for t in data["targets"]))


@dataclass(frozen=True)
class RunbookSpec:
    """What the planners may know about a runbook (read from the catalogue's definitions)."""

    name: str
    title: str
    description: str
    risk: str                      # low | medium | high
    target_kind: str               # node | gpu | pod | deployment | none
    params_schema: dict[str, Any]  # JSON schema of the parameters
    disruptive: bool
    expected_effect: str = ""
    max_targets: int = 1


@dataclass(frozen=True)
class ProposalView:
    """The execution side's answer to a proposal (validated, rehearsed, judged by policy, stored)."""

    action_id: int | None
    status: str                    # awaiting_approval | approved | denied | escalated | invalid
    verdict: dict[str, Any] = field(default_factory=dict)
    diff: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    approvals_required: int = 0


@dataclass(frozen=True)
class ExecutionView:
    """The execution side's answer to an execution request (run once, verified, rolled back on failure)."""

    action_id: int
    status: str                    # succeeded | failed | rolled_back | refused | already_done | dry_run | waiting
    verified: bool
    detail: str
    follow_up: str = ""            # the runbook a failed verification calls for next (a reboot after a reset)
    until: str = ""                # while it waits for the budget: when the hold is rechecked (ISO 8601)


@dataclass(frozen=True)
class HoldView:
    """Whether a node action must wait before it is proposed (policy's soak): `held` (wait until `until`, a data
    time), `over` or `none` (go on), `stale` (detection stopped: a human decides), `closed` (nothing to do)."""

    status: str
    until: str | None = None       # ISO time
    reason: str = ""
