"""The graph's nodes. Each reads the ports from the run's context and returns only the fields it changes.
Work before the approval `interrupt` is idempotent: proposals carry an idempotency key in the store and the
wait node only reads, because LangGraph re-runs an interrupted node from its start on resume."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agent.actions import PlannedAction
from agent.context import AgentContext
from agent.planning import Planner, PlanRequest, PlanResult
from agent.rules import fault_of, gpu_only_plan
from agent.state import IncidentState
from agent.tools import ToolResult, agenda_for, run_tool
from agent.validation import check_action
from domain import ActionStatus, ExecutionStatus, IncidentStatus, ProposalStatus

log = logging.getLogger(__name__)

Update = dict[str, Any]


# Runbooks that only tell people: a plan of these alone hands the incident to a human.
NOTIFICATIONS = frozenset({"notify_only"})


def _step(state: IncidentState) -> int:
    return state.get("steps", 0) + 1


def _current(state: IncidentState) -> PlannedAction:
    return PlannedAction.from_json(state["plan"][state.get("cursor", 0)])


def triage(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    """Read the incident, classify the fault, set the investigation agenda."""
    ctx = runtime.context
    incident = ctx.incidents.snapshot(state["incident_id"])
    snap = incident.to_json()
    if incident.closed:
        return {"incident": snap, "steps": _step(state), "outcome": "closed",
                "reason": f"incident {incident.id} is {incident.status}; nothing to do"}
    if incident.scope != "fleet":
        ctx.incidents.move(incident.id, IncidentStatus.INVESTIGATING, reason="agent investigating", actor=ctx.actor,
                           now=ctx.clock())
    xid_action = None
    if snap["xid"] is not None and ctx.xid is not None:
        entry = ctx.xid.describe(snap["xid"])
        xid_action = None if entry is None else str(entry.get("action", ""))
    # A new round of the thread (a reopened incident) counts its own steps: the limit stops a loop within one
    # round, not an incident that came back after gpuops resolved it.
    return {"incident": snap, "fault": fault_of(snap, xid_action), "agenda": agenda_for(snap), "evidence": [],
            "steps": 1, "notes": [], "cursor": 0, "executions": [], "outcome": "", "reason": ""}


def investigate(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    """Run the next tool on the agenda (one per step; the router loops until the agenda or budget is spent)."""
    ctx = runtime.context
    agenda, evidence = list(state.get("agenda", [])), list(state.get("evidence", []))
    notes = list(state.get("notes", []))
    if len(evidence) >= ctx.limits.max_tool_calls:
        notes.append(f"tool budget of {ctx.limits.max_tool_calls} reached; skipped {', '.join(agenda)}")
        return {"agenda": [], "notes": notes, "steps": _step(state)}
    tool = agenda.pop(0)
    result = run_tool(ctx, state["incident"], tool)
    evidence.append(result.to_json())
    return {"agenda": agenda, "evidence": evidence, "steps": _step(state)}


def plan(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    """Ask the planner; on failure ask the rules planner; audit every rejection and the plan itself."""
    ctx = runtime.context
    incident_snap = state["incident"]
    evidence = [ToolResult.from_json(e) for e in state.get("evidence", [])]
    extra_tools = [0]

    def tool_for_planner(name: str, args: dict[str, Any]) -> ToolResult:
        if len(evidence) + extra_tools[0] >= ctx.limits.max_tool_calls:
            return ToolResult(name[:64], "error", "the investigation tool budget is spent; decide with the evidence")
        extra_tools[0] += 1
        return run_tool(ctx, incident_snap, name, args)

    calls_so_far = ctx.incidents.llm_calls(state["incident_id"])
    request = PlanRequest(
        incident=incident_snap, fault=state["fault"], evidence=evidence, specs=ctx.runbooks.specs(),
        check=lambda action: check_action(ctx, incident_snap, action), run_tool=tool_for_planner,
        llm_calls_so_far=calls_so_far,
        blockers=lambda action: ctx.actions.blockers(incident_id=state["incident_id"], action=action),
    )
    results = [_plan_safely(ctx.planner, request)]
    if not results[0].ok and ctx.planner.name != ctx.fallback.name:
        results.append(_plan_safely(ctx.fallback, request))
    final = results[-1]
    _audit_planning(ctx, state, results)
    notes = list(state.get("notes", [])) + [n for r in results for n in r.notes]
    if len(results) > 1:
        notes.append(f"{results[0].planner} planner failed; {final.planner} planner used")
    if not final.ok or not final.actions:
        why = final.escalate or "the planner proposed no action"
        return {"plan": [], "planner": final.planner, "rationale": final.rationale, "notes": notes,
                "reason": why, "steps": _step(state)}
    return {"plan": [a.to_json() for a in final.actions], "planner": final.planner, "rationale": final.rationale,
            "notes": notes, "cursor": 0, "steps": _step(state)}


def _plan_safely(planner: Planner, request: PlanRequest) -> PlanResult:
    """A planner that breaks on an answer nobody foresaw fails like one that answered nonsense."""
    try:
        return planner.plan(request)
    except Exception as exc:
        log.warning("the %s planner failed", planner.name, exc_info=True)
        return PlanResult(planner.name, ok=False, notes=[f"{planner.name} planner failed: {type(exc).__name__}: "
                                                         f"{str(exc)[:200]}"])


def _audit_planning(ctx: AgentContext, state: IncidentState, results: list[PlanResult]) -> None:
    now, incident_id, incidents = ctx.clock(), state["incident_id"], ctx.incidents
    for result in results:
        for rejection in result.rejections:
            incidents.record(incident_id, kind="agent.plan_rejected",
                             message=f"{result.planner} planner's answer rejected: {rejection.get('problems')}",
                             data={"planner": result.planner, **rejection}, actor=ctx.actor, now=now)
        if result.usage.calls:
            total = incidents.add_llm_usage(incident_id, result.usage.to_json())
            incidents.record(incident_id, kind="agent.llm_usage",
                             message=f"{result.usage.calls} LLM call(s), {result.usage.total_tokens} tokens",
                             data={"this_run": result.usage.to_json(), "incident_total": total},
                             actor=ctx.actor, now=now)
    final = results[-1]
    if final.ok and final.actions:
        incidents.record(incident_id, kind="agent.plan", message=final.rationale,
                         data={"planner": final.planner, "fault": state["fault"],
                               "actions": [a.to_json() for a in final.actions]}, actor=ctx.actor, now=now)


def hold(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    """Wait before a disruptive node action until policy's soak is over (see gpuops.execution.holds): the thread
    pauses and the sweep resumes it once enough telemetry has been examined. Like the approval wait, a resume
    re-runs this node and the store, not the resume value, says whether the hold is over."""
    ctx = runtime.context
    action = _current(state)
    view = ctx.actions.hold(incident_id=state["incident_id"], action=action)
    if view.status == "held":
        interrupt({"incident_id": state["incident_id"], "hold_until": view.until, "reason": view.reason,
                   "runbook": action.runbook, "targets": list(action.targets)})
        view = ctx.actions.hold(incident_id=state["incident_id"], action=action)
    # A hold still running is not progress: it is bounded by the hold itself (the soak's staleness, the budget
    # wait's limit), so waiting does not spend the graph's steps.
    update: Update = {"hold": view.status, **({"steps": _step(state)} if view.status != "held" else {})}
    if view.status == "closed":
        update.update(outcome="closed", reason=view.reason)
    elif view.status == "stale":
        update["reason"] = view.reason
    return update


def policy_check(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    """Hand the current action to the execution side: code validation, dry run, policy verdict, stored Action.
    A re-run returns the same stored action (idempotency key from incident and plan hash)."""
    ctx = runtime.context
    action = _current(state)
    problems = check_action(ctx, state["incident"], action)
    if problems:
        return {"proposal": {"action_id": None, "status": ProposalStatus.INVALID.value, "reasons": problems,
                             "verdict": {}, "diff": {}}, "steps": _step(state)}  # plain values: checkpointed
    view = ctx.actions.propose(incident_id=state["incident_id"], action=action, rationale=state.get("rationale", ""),
                               planner=state.get("planner", "rules"))
    narrower = _gpu_only(state, asdict(view))
    if narrower is not None:
        why = (f"{action.runbook} on {', '.join(action.targets)} denied ({'; '.join(view.reasons)}): the node cannot "
               f"go out, so only its GPU leaves service: {', '.join(a.runbook for a in narrower)}")
        ctx.incidents.record(state["incident_id"], kind="agent.plan", message=why,
                             data={"planner": "rules", "fault": state["fault"], "gpu_only": True,
                                   "actions": [a.to_json() for a in narrower]}, actor=ctx.actor, now=ctx.clock())
        first = narrower[0]
        problems = check_action(ctx, state["incident"], first)
        proposal = {"action_id": None, "status": ProposalStatus.INVALID.value, "reasons": problems, "verdict": {},
                    "diff": {}} if problems else asdict(ctx.actions.propose(
                        incident_id=state["incident_id"], action=first, planner="rules",
                        rationale=f"{state.get('rationale', '')} {why}".strip()[:2000]))
        return {"plan": [a.to_json() for a in narrower], "cursor": 0, "gpu_only": True, "proposal": proposal,
                "notes": [*state.get("notes", []), why], "steps": _step(state)}
    return {"proposal": asdict(view), "steps": _step(state)}


def _gpu_only(state: IncidentState, proposal: dict[str, Any]) -> list[PlannedAction] | None:
    """The GPU-only plan to turn to (`agent.rules.gpu_only_plan`), once per round of the thread: when the plan's
    first action, a node action for a one-GPU fault, was denied by the budgets alone (the healthy-GPU floor, the
    nodes-out budget, or both; no other rule: a freeze or a cool-down still stops it) and nothing of the plan ran
    yet. The GPU-only plan takes no node out, so only the floor weighs it, by the GPUs it takes."""
    if state.get("gpu_only") or state.get("cursor", 0) != 0 or proposal.get("status") != ProposalStatus.DENIED:
        return None
    reasons = list(proposal.get("reasons") or [])
    if not (reasons and all(r.startswith("budget:") for r in reasons)):
        return None
    if not any(t.startswith("node/") for t in _current(state).targets):
        return None
    return gpu_only_plan(state["incident"], state.get("fault", ""))


def rehearse(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    """Put the dry run's diff on the timeline: what would change, pods affected, GPU-hours at risk, blockers."""
    ctx = runtime.context
    proposal, action = state["proposal"], _current(state)
    diff = proposal.get("diff") or {}
    blockers = list(diff.get("blockers") or [])
    message = (f"{action.runbook} on {', '.join(action.targets)}: {len(diff.get('changes') or [])} change(s), "
               f"{len(diff.get('pods_affected') or [])} pod(s) affected, "
               f"{float(diff.get('gpu_hours_at_risk') or 0):.1f} GPU-hours at risk"
               + (f"; blocked: {'; '.join(blockers)}" if blockers else ""))
    ctx.incidents.record(state["incident_id"], kind="agent.rehearsal", message=message,
                         data={"action": action.to_json(), "diff": diff, "verdict": proposal.get("verdict", {})},
                         actor=ctx.actor, now=ctx.clock(), action_id=proposal.get("action_id"))
    if proposal["status"] == ProposalStatus.AWAITING_APPROVAL and not blockers:
        ctx.incidents.move(state["incident_id"], IncidentStatus.AWAITING_APPROVAL,
                           reason=f"{action.runbook} awaits approval", actor=ctx.actor, now=ctx.clock())
    return {"steps": _step(state), **({"reason": f"dry run blocked: {'; '.join(blockers)}"} if blockers else {})}


def await_approval(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    """Pause the thread until a human decides. Only reads: on resume LangGraph runs this node again, and the
    stored action (not the resume value) says what was decided."""
    ctx = runtime.context
    action_id = int(state["proposal"]["action_id"])
    status = ctx.actions.status(action_id)
    if status == ActionStatus.AWAITING_APPROVAL:
        action = _current(state)
        interrupt({"incident_id": state["incident_id"], "action_id": action_id, "runbook": action.runbook,
                   "targets": list(action.targets), "approvals_required": state["proposal"].get("approvals_required")})
        status = ctx.actions.status(action_id)
    return {"approval": status, "steps": _step(state)}


def execute(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    """Run the approved action; the execution side claims it so it runs at most once, and moves the incident
    to executing and verifying as it goes."""
    ctx = runtime.context
    action_id = int(state["proposal"]["action_id"])
    view = ctx.actions.execute(action_id=action_id)
    if view.status == ExecutionStatus.WAITING:
        # The budgets refuse it now only because of gpuops' own nodes, out on another incident since it was
        # proposed: the incident is held, and the sweep resumes this thread at each recheck. Like a hold, the wait
        # is bounded by the budget wait and the approval's validity, so it spends no steps.
        interrupt({"incident_id": state["incident_id"], "action_id": action_id, "hold_until": view.until,
                   "reason": view.detail, "runbook": _current(state).runbook})
        view = ctx.actions.execute(action_id=action_id)
        if view.status == ExecutionStatus.WAITING:
            return {"execution_wait": view.detail}
    if view.status == ExecutionStatus.IN_PROGRESS:
        # Another executor holds the claim (the sweep took over an action whose message was lost, or whose wait
        # for the budget was over): wait for it to finish; it resumes this thread. A resume re-runs this node, and
        # the store says how it ended.
        interrupt({"incident_id": state["incident_id"], "action_id": action_id, "executing": view.detail})
        view = ctx.actions.execute(action_id=action_id)
        if view.status == ExecutionStatus.IN_PROGRESS:
            return {"execution_wait": view.detail, "steps": _step(state)}
    return {"executions": [*state.get("executions", []), asdict(view)], "execution_wait": "", "steps": _step(state)}


def verify(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    """Read the execution's verification; move on to the next action of the plan, or finish."""
    ctx = runtime.context
    last = state["executions"][-1]
    ok = _execution_ok(last)
    if last["status"] == ExecutionStatus.ALREADY_DONE:  # another run executed it: only a success counts
        ok = ctx.actions.status(int(last["action_id"])) == ActionStatus.SUCCEEDED
    if ok and state.get("cursor", 0) + 1 < len(state["plan"]):
        ctx.incidents.move(state["incident_id"], IncidentStatus.INVESTIGATING, reason="next action of the plan",
                           actor=ctx.actor, now=ctx.clock())
    if not ok:
        rung = _next_rung(state, last)
        if rung is not None:  # proposed, judged by policy and approved like any step of the plan
            why = f"action {last['action_id']} {last['status']}: {last['detail']}; next: {rung.runbook}"
            ctx.incidents.move(state["incident_id"], IncidentStatus.INVESTIGATING, reason=why[:500],
                               actor=ctx.actor, now=ctx.clock())
            cursor = state.get("cursor", 0)
            plan = [*state["plan"][:cursor + 1], rung.to_json(), *state["plan"][cursor + 1:]]
            return {"plan": plan, "cursor": cursor + 1, "notes": [*state.get("notes", []), why],
                    "steps": _step(state)}
        return {"reason": f"action {last['action_id']} {last['status']}: {last['detail']}", "steps": _step(state)}
    return {"cursor": state.get("cursor", 0) + 1, "steps": _step(state)}


def _next_rung(state: IncidentState, last: dict[str, Any]) -> PlannedAction | None:
    """The step a failed action's verification calls for, once per plan: a GPU reset that ran but did not bring
    its GPU back is followed by a reboot of its node (the driver reloads and the bus is walked again); if the GPU
    is still missing after that, the node's probation returns it without that GPU, on a hardware ticket. None
    for any other failure, or when the plan holds that runbook already: the incident goes to a human."""
    runbook = str(last.get("follow_up") or "")
    if runbook != "reboot_node" or any(a["runbook"] == runbook for a in state["plan"]):
        return None
    failed = _current(state)
    nodes = [t.split("/")[1] for t in failed.targets if t.startswith(("gpu/", "node/"))]
    if len(nodes) != 1:
        return None
    reason = (f"gpuops incident {state['incident_id']}: the GPU reset (action {last['action_id']}) ran but the GPU "
              "did not come back; a reboot reloads the driver before the GPU goes back to the vendor")
    return PlannedAction("reboot_node", {"reason": reason[:500], "uncordon_after": False}, (f"node/{nodes[0]}",))


def _execution_ok(view: dict[str, Any]) -> bool:
    return view["status"] == ExecutionStatus.DRY_RUN or (
        view["status"] in (ExecutionStatus.SUCCEEDED, ExecutionStatus.ALREADY_DONE) and bool(view["verified"]))


def resolve(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    ctx = runtime.context
    dry = any(e["status"] == ExecutionStatus.DRY_RUN for e in state.get("executions", []))
    if dry:
        return _finish(ctx, state, IncidentStatus.ESCALATED,
                       "dry-run mode: the plan was rehearsed, nothing was executed")
    done = ", ".join(a["runbook"] for a in state["plan"])
    if all(a["runbook"] in NOTIFICATIONS for a in state["plan"]):
        # telling the humans fixes nothing: the incident is theirs now
        return _finish(ctx, state, IncidentStatus.ESCALATED,
                       f"no automated remedy for {state.get('fault') or 'this fault'}: the humans were notified")
    failed = [str(e["action_id"]) for e in state.get("executions", []) if not _execution_ok(e)]
    also = f" (action {', '.join(failed)} failed, and the step it called for followed)" if failed else ""
    return _finish(ctx, state, IncidentStatus.RESOLVED, f"{done} executed and verified{also}")


def escalate(state: IncidentState, runtime: Runtime[AgentContext]) -> Update:
    ctx = runtime.context
    return _finish(ctx, state, IncidentStatus.ESCALATED, _why_escalated(state, ctx))


def _why_escalated(state: IncidentState, ctx: AgentContext) -> str:
    if state.get("steps", 0) >= ctx.limits.max_steps:
        return f"step limit of {ctx.limits.max_steps} reached; a human takes the incident"
    if state.get("reason"):
        return state["reason"]
    if state.get("incident", {}).get("scope") == "fleet":
        return "fleet-wide incident: no per-node action; a human decides"
    proposal = state.get("proposal") or {}
    approval = state.get("approval")
    if approval and approval not in (ActionStatus.APPROVED, ActionStatus.AWAITING_APPROVAL):
        return f"action {proposal.get('action_id')} was {approval}; a human takes the incident"
    if proposal.get("status") in ActionStatus.FINISHED_AFTER_PROPOSAL:
        return (f"this plan already ran for incident {state['incident_id']} as action {proposal.get('action_id')} "
                f"({proposal.get('status')}); the incident came back, so a human decides")
    if proposal and proposal.get("status") not in (ProposalStatus.APPROVED, ProposalStatus.AWAITING_APPROVAL):
        return f"proposal {proposal.get('status')}: {'; '.join(proposal.get('reasons') or []) or 'no reason given'}"
    return "a human decides"


def _finish(ctx: AgentContext, state: IncidentState, outcome: IncidentStatus, reason: str) -> Update:
    ctx.incidents.move(state["incident_id"], outcome, reason=reason[:500], actor=ctx.actor, now=ctx.clock())
    ctx.incidents.record(state["incident_id"], kind=f"agent.{outcome}", message=reason,
                         data={"notes": state.get("notes", [])[-10:], "planner": state.get("planner", "")},
                         actor=ctx.actor, now=ctx.clock())
    return {"outcome": outcome.value, "reason": reason, "steps": _step(state)}
