"""Start an incident's graph, or resume it after a decision, from any process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from agent.context import AgentContext
from agent.errors import ThreadNotFound
from agent.locks import incident_lock
from agent.state import IncidentState, thread_id


@dataclass
class RunReport:
    """Where an incident's thread stands after a run: finished (outcome) or waiting for a decision."""

    incident_id: int
    outcome: str                       # resolved | escalated | closed | "" while waiting
    reason: str
    waiting_for: dict[str, Any] | None = None   # the approval interrupt's payload while waiting for a human
    held: dict[str, Any] | None = None          # the hold interrupt's payload while a node action soaks
    executing: dict[str, Any] | None = None     # while another executor runs the approved action
    planner: str = ""
    plan: list[dict[str, Any]] = field(default_factory=list)
    executions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    steps: int = 0


Graph = CompiledStateGraph[IncidentState, AgentContext, Any, Any]


def _config(incident_id: int, ctx: AgentContext) -> RunnableConfig:
    # The graph's own step limit sits above ours, so ours (an escalation) always trips first.
    return {"configurable": {"thread_id": thread_id(incident_id)}, "recursion_limit": ctx.limits.max_steps + 10}


def report(graph: Graph, ctx: AgentContext, incident_id: int) -> RunReport:
    snap = graph.get_state(_config(incident_id, ctx))
    values: dict[str, Any] = dict(snap.values or {})
    waiting = next((i.value for i in snap.interrupts), None) if snap.next else None
    held = waiting if isinstance(waiting, dict) and "hold_until" in waiting else None
    executing = waiting if isinstance(waiting, dict) and "executing" in waiting else None
    return RunReport(incident_id=incident_id, outcome=values.get("outcome", ""), reason=values.get("reason", ""),
                     waiting_for=None if held or executing else waiting, held=held, executing=executing,
                     planner=values.get("planner", ""),
                     plan=values.get("plan", []), executions=values.get("executions", []),
                     notes=values.get("notes", []), steps=values.get("steps", 0))


def start(graph: Graph, ctx: AgentContext, incident_id: int) -> RunReport:
    """Run the incident's graph until it finishes or waits for a human."""
    with incident_lock(ctx.database_url, incident_id):
        graph.invoke({"incident_id": incident_id}, _config(incident_id, ctx), context=ctx)
        return report(graph, ctx, incident_id)


def resume(graph: Graph, ctx: AgentContext, incident_id: int, decision: dict[str, Any] | None = None) -> RunReport:
    """Continue a thread that waits for a decision (recorded in the store before calling this). A thread that
    is not waiting is left alone and reported as it stands."""
    config = _config(incident_id, ctx)
    with incident_lock(ctx.database_url, incident_id):
        snap = graph.get_state(config)
        if not snap.values:
            raise ThreadNotFound(f"incident {incident_id} has no agent thread; start it first")
        if snap.next:
            graph.invoke(Command(resume=decision or {}), config, context=ctx)
        return report(graph, ctx, incident_id)
