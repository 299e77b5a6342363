"""The investigation and planning graph:

    triage → investigate (tool loop) → plan → hold (interrupt while soaking) → policy_check → rehearse
           → await_approval (interrupt) → execute (interrupt while another executor runs it) → verify
           → (next action: hold) | resolve | escalate

A plan is an ordered list of actions (cordon, then drain, then reboot); each is proposed, judged by policy,
rehearsed and approved on its own, after the previous one executed and verified. Routers raise on states
that cannot happen; the step limit sends the incident to a human instead of looping.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from agent import nodes
from agent.context import AgentContext
from agent.state import IncidentState
from domain import ActionStatus, ProposalStatus


class ImpossibleState(RuntimeError):
    """A router met a state the graph cannot produce: a bug, not an outcome."""


def _over_limit(state: IncidentState, runtime: Runtime[AgentContext]) -> bool:
    return state.get("steps", 0) >= runtime.context.limits.max_steps


def after_triage(state: IncidentState, runtime: Runtime[AgentContext]) -> str:
    if state.get("outcome") == "closed":
        return END
    if state["incident"]["scope"] == "fleet":
        return "escalate"
    return "investigate"


def after_investigate(state: IncidentState, runtime: Runtime[AgentContext]) -> str:
    if _over_limit(state, runtime):
        return "escalate"
    return "investigate" if state.get("agenda") else "plan"


def after_plan(state: IncidentState, runtime: Runtime[AgentContext]) -> str:
    return "hold" if state.get("plan") else "escalate"


def after_hold(state: IncidentState, runtime: Runtime[AgentContext]) -> str:
    status = state.get("hold")
    if status == "closed":
        return END
    if status == "stale" or _over_limit(state, runtime):
        return "escalate"
    if status == "held":
        return "hold"  # resumed before the soak was over: wait again
    if status in ("none", "over"):
        return "policy_check"
    raise ImpossibleState(f"unknown hold status {status!r}")


def after_policy(state: IncidentState, runtime: Runtime[AgentContext]) -> str:
    status = state["proposal"]["status"]
    if status in (ProposalStatus.AWAITING_APPROVAL, ProposalStatus.APPROVED):
        if state["proposal"].get("action_id") is None:
            raise ImpossibleState(f"proposal {status} without an action id")
        return "rehearse"
    # Denied or escalated by policy, or (an incident that reopened proposes the same plan again) the store
    # answered with the earlier action, finished.
    if status == ProposalStatus.INVALID or status in ActionStatus.FINISHED:
        return "escalate"
    raise ImpossibleState(f"unknown proposal status {status!r}")


def after_rehearse(state: IncidentState, runtime: Runtime[AgentContext]) -> str:
    if (state["proposal"].get("diff") or {}).get("blockers"):
        return "escalate"
    status = state["proposal"]["status"]
    if status == ProposalStatus.APPROVED:
        return "execute"
    if status == ProposalStatus.AWAITING_APPROVAL:
        return "await_approval"
    raise ImpossibleState(f"rehearsal reached with proposal status {status!r}")


def after_approval(state: IncidentState, runtime: Runtime[AgentContext]) -> str:
    status = state.get("approval")
    if status == ActionStatus.APPROVED or status in ActionStatus.EXECUTED:
        return "execute"
    if _over_limit(state, runtime):
        return "escalate"
    if status == ActionStatus.AWAITING_APPROVAL:
        return "await_approval"  # not enough approvals yet (two-person rule): wait again
    if status in ActionStatus.STOPPED:
        return "escalate"
    raise ImpossibleState(f"unknown action status after approval {status!r}")


def after_execute(state: IncidentState, runtime: Runtime[AgentContext]) -> str:
    if not state.get("execution_wait"):
        return "verify"
    return "escalate" if _over_limit(state, runtime) else "execute"  # another executor still runs it: wait


def after_verify(state: IncidentState, runtime: Runtime[AgentContext]) -> str:
    if state.get("reason"):
        return "escalate"
    if _over_limit(state, runtime):
        return "escalate"
    cursor, planned = state.get("cursor", 0), len(state.get("plan", []))
    if cursor > planned:
        raise ImpossibleState(f"cursor {cursor} beyond a plan of {planned} actions")
    return "hold" if cursor < planned else "resolve"


def build_graph() -> StateGraph[IncidentState, AgentContext, Any, Any]:
    graph: StateGraph[IncidentState, AgentContext, Any, Any] = StateGraph(IncidentState, context_schema=AgentContext)
    graph.add_node("triage", nodes.triage)
    graph.add_node("investigate", nodes.investigate)
    graph.add_node("plan", nodes.plan)
    graph.add_node("hold", nodes.hold)
    graph.add_node("policy_check", nodes.policy_check)
    graph.add_node("rehearse", nodes.rehearse)
    graph.add_node("await_approval", nodes.await_approval)
    graph.add_node("execute", nodes.execute)
    graph.add_node("verify", nodes.verify)
    graph.add_node("resolve", nodes.resolve)
    graph.add_node("escalate", nodes.escalate)
    graph.add_edge(START, "triage")
    graph.add_conditional_edges("triage", after_triage, ["investigate", "escalate", END])
    graph.add_conditional_edges("investigate", after_investigate, ["investigate", "plan", "escalate"])
    graph.add_conditional_edges("plan", after_plan, ["hold", "escalate"])
    graph.add_conditional_edges("hold", after_hold, ["hold", "policy_check", "escalate", END])
    graph.add_conditional_edges("policy_check", after_policy, ["rehearse", "escalate"])
    graph.add_conditional_edges("rehearse", after_rehearse, ["execute", "await_approval", "escalate"])
    graph.add_conditional_edges("await_approval", after_approval, ["execute", "await_approval", "escalate"])
    graph.add_conditional_edges("execute", after_execute, ["execute", "verify", "escalate"])
    graph.add_conditional_edges("verify", after_verify, ["hold", "resolve", "escalate"])
    graph.add_edge("resolve", END)
    graph.add_edge("escalate", END)
    return graph


def compile_graph(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[IncidentState, AgentContext, Any, Any]:
    return build_graph().compile(checkpointer=checkpointer)
