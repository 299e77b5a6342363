"""The whole plan of an incident at once: every step the planner intends (its latest `agent.plan`), each with its
status, risk, the approvals it needs, and its blast radius from what ran on the node; steps not proposed yet
carry the risk and approvals policy would ask for, marked as predicted. And the plan's blast radius as a whole,
for the top of the incident page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain import InvalidTarget, Target
from gpuops.policy.config import PolicyConfig
from gpuops.store.models import Action, Incident
from runbooks.blast import NODE_STEPS_STOPPING_PODS, BlastRadius, Workload, plan_blast_radius, step_blast_radius
from runbooks.catalogue import Catalogue
from runbooks.errors import UnknownRunbook
from runbooks.settings import RunbookSettings


@dataclass(frozen=True)
class PlanInputs:
    catalogue: Catalogue
    policy: PolicyConfig
    runbook_settings: RunbookSettings


def intended_steps(incident: Incident) -> list[dict[str, Any]]:
    """The planner's latest full sequence ({runbook, params, targets}), or, without one, the stored actions."""
    for event in reversed(incident.events):
        if event.kind == "agent.plan" and isinstance((event.data or {}).get("actions"), list):
            return [a for a in event.data["actions"] if isinstance(a, dict) and a.get("runbook")]
    return [{"runbook": a.runbook, "params": a.parameters, "targets": a.targets} for a in incident.actions]


def _stored(step: dict[str, Any], actions: list[Action], used: set[int]) -> Action | None:
    """The latest stored action of this step (same runbook and targets) not matched to an earlier step."""
    targets = sorted(str(t) for t in step.get("targets", []))
    for action in reversed(actions):
        if action.id not in used and action.runbook == step["runbook"] and sorted(action.targets) == targets:
            return action
    return None


def _gpu_of(targets: list[str]) -> int | None:
    for key in targets:
        try:
            target = Target.parse(key)
        except InvalidTarget:
            continue
        if target.gpu is not None:
            return int(target.gpu)
    return None


def predicted_risk(runbook: str, inputs: PlanInputs, workload: Workload | None) -> str:
    """The runbook's risk; a drain or reboot that stops a training job is high (as the drain's own risk says)."""
    try:
        risk = str(inputs.catalogue.get(runbook).risk)
    except UnknownRunbook:
        return "unknown"
    if runbook in NODE_STEPS_STOPPING_PODS and workload is not None and any(
            p.checkpoints and not p.stays for p in workload.pods):
        return "high"
    return risk


def predicted_approvals(runbook: str, risk: str, inputs: PlanInputs) -> int:
    """The approvals policy asks for at this risk (its gate, before budgets): none for an auto-approvable low-risk
    runbook, two for high risk, one otherwise."""
    try:
        auto = inputs.catalogue.get(runbook).auto_approvable
    except UnknownRunbook:
        auto = False
    if risk == "low" and auto and runbook in inputs.policy.auto_approve:
        return 0
    return 2 if risk == "high" else 1


def plan_view(incident: Incident, inputs: PlanInputs, workload: Workload | None) -> dict[str, Any]:
    """{"steps": [...], "blast": the whole plan's blast radius or None, "remaining": steps not finished}."""
    steps: list[dict[str, Any]] = []
    radii: list[BlastRadius] = []
    used: set[int] = set()
    actions = list(incident.actions)
    for number, step in enumerate(intended_steps(incident), start=1):
        runbook, targets = str(step["runbook"]), [str(t) for t in step.get("targets", [])]
        action = _stored(step, actions, used)
        if action is not None:
            used.add(action.id)
        risk = action.risk if action is not None else predicted_risk(runbook, inputs, workload)
        blast: BlastRadius | None = None
        if workload is not None:
            blast = step_blast_radius(runbook, workload, inputs.runbook_settings, _gpu_of(targets))
            radii.append(blast)
        try:
            title = inputs.catalogue.get(runbook).title
        except UnknownRunbook:
            title = runbook
        steps.append({
            "number": number, "runbook": runbook, "title": title, "targets": targets,
            "params": dict(step.get("params") or {}), "action_id": action.id if action is not None else None,
            "status": action.status if action is not None else "planned",
            "risk": risk, "predicted": action is None,
            "approvals_required": (action.approvals_required if action is not None
                                   else predicted_approvals(runbook, risk, inputs)),
            "blast": blast.to_json() if blast is not None else None,
        })
    whole = plan_blast_radius(radii)
    finished = {"succeeded", "failed", "rejected", "refused", "expired", "rolled_back"}
    return {"steps": steps, "blast": whole.to_json() if whole is not None else None,
            "remaining": sum(1 for s in steps if s["status"] not in finished)}
