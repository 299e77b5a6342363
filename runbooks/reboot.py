"""reboot_node: drain the node (checkpointing training jobs), have the node agent reboot it (a NodeReboot
request), wait until it is Ready again, then lift the drain's cordon if this action made it."""

from __future__ import annotations

from pydantic import Field

from connectors.kubernetes import NotFound
from runbooks import drain
from runbooks.context import RunbookContext
from runbooks.cordon import cordoned_by_plan, find_node, release
from runbooks.definition import Runbook, RunbookDefinition, StepKind
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.node_agent import request_name, wait_request


class RebootParams(drain.DrainParams):
    """How to drain and reboot a node."""

    reboot_timeout_s: float | None = Field(default=None, gt=0, le=86_400, description="default from settings")
    uncordon_after: bool = Field(default=True, description="return the node to service once it is Ready again")


REBOOT = Runbook[RebootParams](
    RunbookDefinition(
        name="reboot_node",
        title="Drain and reboot a node",
        description="Drain the node as drain_node does, reboot it through the node agent, wait until it is Ready.",
        risk=Risk.HIGH,
        target_kind=TargetKind.NODE,
        params_model=RebootParams,
        disruptive=True,
        auto_approvable=False,
        expected_effect="the node rebooted (a new boot), is Ready, and is schedulable again unless asked otherwise",
        verify_deadline_s=300,
        has_rollback=False,
    )
)

for _step in drain.DRAIN.steps:
    REBOOT.register(StepKind.STEP, _step.fn, _step.name)


@REBOOT.precondition
def _pre(plan: Plan, params: RebootParams, ctx: RunbookContext) -> list[str]:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return problems
    return drain.evacuation(ctx, node.name, params).blockers


@REBOOT.dry_run
def _dry(plan: Plan, params: RebootParams, ctx: RunbookContext) -> Diff:
    diff = drain.drain_diff(plan, params, ctx)
    node = ctx.cluster.get_node(str(plan.target.node)) if not diff.blockers else None
    diff.changes.append(f"reboot {plan.target.node} (NodeReboot request to the node agent)")
    if params.uncordon_after and node is not None and not node.unschedulable:
        diff.changes.append(f"uncordon {plan.target.node} once Ready")
    if node is not None:
        diff.gpus_affected = node.gpu_capacity
        diff.gpu_hours_at_risk = round(
            diff.gpu_hours_at_risk + node.gpu_capacity * ctx.settings.expected_reboot_s / 3600, 3
        )
    return diff


@REBOOT.step
def reboot(plan: Plan, params: RebootParams, ctx: RunbookContext) -> StepResult:
    name = request_name(plan, ctx, "reboot")
    ctx.cluster.request_node_reboot(str(plan.target.node), name=name)
    return wait_request(
        ctx, ctx.cluster.get_node_reboot, name, params.reboot_timeout_s or ctx.settings.node_reboot_timeout_s
    )


@REBOOT.step
def wait_ready(plan: Plan, params: RebootParams, ctx: RunbookContext) -> StepResult:
    node = str(plan.target.node)
    deadline = params.reboot_timeout_s or ctx.settings.node_reboot_timeout_s
    if ctx.poll(deadline, lambda: True if ctx.cluster.get_node(node).ready is True else None):
        return StepResult(True, f"{node} is Ready")
    return StepResult(False, f"{node} not Ready {deadline:g}s after its reboot; {drain.left_cordoned(node)}")


@REBOOT.step
def release_node(plan: Plan, params: RebootParams, ctx: RunbookContext) -> StepResult:
    if not params.uncordon_after:
        return StepResult(True, f"{plan.target.node} left cordoned as asked")
    return release(ctx, plan, str(plan.target.node))


@REBOOT.verify
def _verify(plan: Plan, params: RebootParams, ctx: RunbookContext) -> StepResult:
    name = request_name(plan, ctx, "reboot")
    try:
        request = ctx.cluster.get_node_reboot(name)
    except NotFound:
        return StepResult(False, f"no NodeReboot request {name}: this plan has not rebooted the node")
    node = ctx.cluster.get_node(str(plan.target.node))
    if request.phase != "Succeeded":
        return StepResult(False, f"{name} is {request.phase}: {request.message}")
    if node.ready is not True:
        return StepResult(False, f"{node.name} is not Ready")
    if params.uncordon_after and node.unschedulable and cordoned_by_plan(node, plan):
        return StepResult(False, f"{node.name} is still cordoned by this action")
    return StepResult(True, f"{node.name} rebooted and Ready")
