"""What the graph needs from the rest of gpuops, as interfaces; the cluster is connectors.kubernetes'
ClusterPort. The caller builds the real adapters (or the fakes) and hands them over in the AgentContext;
nothing here builds a client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.actions import ExecutionView, HoldView, PlannedAction, ProposalView, RunbookSpec
from detectors.frame import FleetFrame


class RunbookPort(Protocol):
    """The runbook catalogue as the planners see it."""

    def specs(self) -> list[RunbookSpec]:
        """Every runbook, in a stable order."""
        ...

    def check(self, action: PlannedAction) -> list[str]:
        """Why `action` does not fit its runbook (unknown runbook, invalid parameters, wrong targets);
        [] when it fits. Never raises for a bad action."""
        ...


class ActionPort(Protocol):
    """The execution service: proposals go through validation, dry run, policy and the store; execution
    happens at most once, is verified, and rolls back on failure."""

    def hold(self, *, incident_id: int, action: PlannedAction) -> HoldView:
        """Whether `action` must wait before it is proposed (policy's soak before a node action)."""
        ...

    def propose(self, *, incident_id: int, action: PlannedAction, rationale: str, planner: str) -> ProposalView:
        ...

    def status(self, action_id: int) -> str:
        """The stored action's status (awaiting_approval, approved, rejected, expired, succeeded, …)."""
        ...

    def execute(self, *, action_id: int) -> ExecutionView:
        ...


class TelemetryPort(Protocol):
    """The telemetry connector's port (one FleetFrame per window)."""

    def frame(self, start: float, end: float, step: float, metrics: Sequence[str] | None = None) -> FleetFrame:
        ...


class XidCatalogue(Protocol):
    """The XID catalogue: a code's name, family and NVIDIA's recommended action, or None when unknown."""

    def describe(self, code: int) -> Mapping[str, Any] | None:
        ...
