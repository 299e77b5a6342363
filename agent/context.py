"""What the graph's nodes get at run time: the ports, the planners and the limits. The caller builds it
(the wiring in production, the tests with their own parts) and passes it to every invoke and resume."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from agent.ports import (
    ActionPort,
    EvidencePort,
    IncidentPort,
    PolicyPort,
    RunbookPort,
    TelemetryPort,
    XidCatalogue,
)
from connectors.kubernetes import ClusterPort
from domain import clock

if TYPE_CHECKING:
    from agent.planning import Planner


class AgentLimits(BaseModel):
    """Bounds on one incident's graph run. Reaching one is an outcome (escalate), never an exception."""

    max_steps: int = Field(default=40, ge=5, description="graph steps before the incident goes to a human")
    max_tool_calls: int = Field(default=8, ge=0, description="investigation tool runs per incident")
    tool_output_chars: int = Field(default=2000, ge=200, description="size bound of one fenced tool result")
    metrics_window_s: float = Field(default=900.0, gt=0, description="telemetry looked at before the incident")
    metrics_step_s: float = Field(default=15.0, gt=0)
    history_days: float = Field(default=30.0, gt=0, description="how far back the incident history looks")


def _now() -> datetime:
    return clock.now()


@dataclass
class AgentContext:
    """Ports and planners for one process. `planner` is the LLM planner when one is configured, else the
    rules planner; `fallback` is always the rules planner."""

    incidents: IncidentPort
    evidence: EvidencePort
    policy: PolicyPort
    runbooks: RunbookPort
    actions: ActionPort
    planner: Planner
    fallback: Planner
    telemetry: TelemetryPort | None = None
    cluster: ClusterPort | None = None
    xid: XidCatalogue | None = None
    limits: AgentLimits = field(default_factory=AgentLimits)
    clock: Callable[[], datetime] = _now
    actor: str = "agent"
    database_url: str | None = None  # where the store and checkpoints live: runs of one incident are serialised
