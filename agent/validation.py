"""The code that decides whether a planner's action may even be proposed: the runbook exists, its parameters
validate, and its targets lie inside the incident. No planner output reaches policy without passing here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.actions import PlannedAction
from agent.incidents import IncidentScope
from agent.rejections import rejection_problem
from connectors.kubernetes.errors import ClusterError
from domain import InvalidTarget, Target, TargetKind

if TYPE_CHECKING:
    from agent.context import AgentContext


def _pod_nodes(ctx: AgentContext, targets: tuple[str, ...]) -> dict[str, str | None]:
    """The node each pod target runs on, read from the cluster (None when the pod is unknown)."""
    found: dict[str, str | None] = {}
    for key in targets:
        try:
            target = Target.parse(key)
        except InvalidTarget:
            continue  # the runbook check has refused it already
        if target.kind is not TargetKind.POD or target.namespace is None or target.name is None or ctx.cluster is None:
            continue
        try:
            found[key] = ctx.cluster.get_pod(target.namespace, target.name).node
        except ClusterError:  # a pod that does not exist is outside every incident
            found[key] = None
    return found


def check_action(ctx: AgentContext, incident: dict[str, Any], action: PlannedAction) -> list[str]:
    """Every reason `action` must not be proposed for `incident`; [] when it may go to policy."""
    if not isinstance(action.params, dict):
        return ["params must be an object"]
    problems = ctx.runbooks.check(action) or rejection_problem(incident, action)
    if problems:
        return problems
    return ctx.policy.scope_violations(IncidentScope.of(incident), action.targets, _pod_nodes(ctx, action.targets))
