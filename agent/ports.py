"""What the graph needs from the rest of gpuops, as interfaces; the cluster is connectors.kubernetes'
ClusterPort. The caller builds the real adapters (or the fakes) and hands them over in the AgentContext;
nothing here builds a client. The agent reaches the core (store, lifecycle, policy, execution) only
through these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from agent.actions import ExecutionView, HoldView, PlannedAction, ProposalView, RunbookSpec
from agent.incidents import IncidentScope, IncidentSnapshot, PastIncident
from detectors.frame import FleetFrame


class IncidentPort(Protocol):
    """The incident store and its lifecycle. Each call is one transaction; `IncidentNotFound`
    (agent.errors) for an incident that does not exist."""

    def snapshot(self, incident_id: int) -> IncidentSnapshot:
        """The incident as it stands now."""
        ...

    def move(self, incident_id: int, status: str, *, reason: str, actor: str, now: datetime) -> bool:
        """Move the incident to `status` when the lifecycle allows it (timeline and audit included); False
        when it is there already or may not go there, so a node re-run after a resume is harmless."""
        ...

    def record(self, incident_id: int, *, kind: str, message: str, data: Mapping[str, Any], actor: str,
               now: datetime, action_id: int | None = None) -> None:
        """One timeline entry and one audit record."""
        ...

    def llm_calls(self, incident_id: int) -> int:
        """LLM calls made for this incident so far, across runs (the planner's call cap counts them)."""
        ...

    def add_llm_usage(self, incident_id: int, usage: Mapping[str, float]) -> dict[str, float]:
        """Add one run's calls, tokens and cost to the incident's total; the new total."""
        ...


class EvidencePort(Protocol):
    """What the investigation tools read from the store."""

    def incidents_on_node(self, hostname: str, *, since: datetime, excluding: int,
                          limit: int = 20) -> list[PastIncident]:
        """Incidents on `hostname` opened since `since`, newest first, other than `excluding`."""
        ...


class PolicyPort(Protocol):
    """Policy's rules the agent applies before proposing (policy itself judges again at proposal)."""

    def scope_violations(self, incident: IncidentScope, targets: Sequence[str],
                         pod_nodes: Mapping[str, str | None]) -> list[str]:
        """Why targets fall outside the incident ([] when all are inside); `pod_nodes` maps pod targets to
        the node they run on."""
        ...


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

    def blockers(self, *, incident_id: int, action: PlannedAction) -> list[str]:
        """What stops `action` on the cluster as it stands now (its runbook's preconditions, read live); [] when
        nothing does. Changes nothing and stores nothing: a planner choosing among sizes asks it."""
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
