"""isolate_gpu: take one failing GPU out of service while its node keeps serving with the others.

A fault of one GPU that needs the part replaced (an SBE storm heading for a double-bit error, a row-remap budget
running out, a GPU whose cooling fails, a PCIe link replaying) is met by draining its node when the fleet can
spare the node. When the healthy-GPU floor cannot, the work still has to leave that GPU before it fails under
it: this runbook holds new pods off the node with a temporary cordon, asks training jobs to checkpoint, evicts
only the pods on that GPU (their controllers recreate them elsewhere, or on the node's other GPUs once the
cordon lifts), has the node agent fence the GPU (a GPUFence request: the driver's drain state and a device
plugin restart, runbooks/NODE_AGENT.md), and lifts its cordon. The node returns to service one GPU short; the
GPU waits for its hardware ticket. The pods on the node's other GPUs never stop."""

from __future__ import annotations

from pydantic import Field

from connectors.kubernetes import NotFound
from runbooks.context import RunbookContext
from runbooks.cordon import action_reason, cordon, cordoned_by_plan, find_node, release
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.node_agent import request_name, wait_request
from runbooks.pods import (
    EvacuationParams,
    describe_moves,
    evict_pods,
    gpu_hours_at_risk,
    is_training_pod,
    pod_key,
    request_checkpoints,
    wait_gone,
)
from runbooks.reset_gpu import gpu_problems, holders


class IsolateGpuParams(EvacuationParams):
    """How to move the work off one GPU and fence it."""

    fence_timeout_s: float | None = Field(default=None, gt=0, le=86_400, description="default from settings")


ISOLATE = Runbook[IsolateGpuParams](
    RunbookDefinition(
        name="isolate_gpu",
        title="Isolate a failing GPU",
        description=(
            "Evict only the pods using one GPU (training jobs checkpoint first) with the node cordoned meanwhile, "
            "have the node agent fence the GPU off, then uncordon: the node serves on with its other GPUs."
        ),
        risk=Risk.MEDIUM,
        target_kind=TargetKind.GPU,
        params_model=IsolateGpuParams,
        disruptive=True,
        takes="gpu",
        auto_approvable=False,
        expected_effect="no pod on the GPU, the GPUFence request Succeeded, the node reports one GPU fewer "
                        "allocatable and takes new pods again",
        verify_deadline_s=120,
        has_rollback=True,
    )
)


@ISOLATE.risk
def _risk(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> Risk:
    moves = holders(ctx, str(plan.target.node), int(plan.target.gpu or 0), params)
    return Risk.HIGH if any(is_training_pod(p, ctx.settings) for p in moves.evict) else Risk.MEDIUM


@ISOLATE.precondition
def _pre(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> list[str]:
    node, problems = find_node(ctx, str(plan.target.node))
    gpu = int(plan.target.gpu or 0)
    problems += gpu_problems(node, gpu, "isolate")
    if node is None or problems:
        return problems
    if node.unschedulable and not node.cordoned_by_gpuops:
        return [f"{node.name} is cordoned by someone else; gpuops leaves their node as it is"]
    return holders(ctx, node.name, gpu, params).blockers


@ISOLATE.dry_run
def _dry(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> Diff:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return Diff(blockers=problems)
    gpu = int(plan.target.gpu or 0)
    moves = holders(ctx, node.name, gpu, params)
    hold = [] if node.unschedulable else [f"cordon {node.name} while GPU {gpu} is isolated"]
    after = [] if node.unschedulable else [f"uncordon {node.name}: it serves on with its other GPUs"]
    return Diff(
        changes=hold + describe_moves(moves, params, ctx.settings)
        + [f"fence GPU {gpu} off on {node.name} (GPUFence request to the node agent): the device plugin no "
           f"longer gives it to pods until the node reboots"] + after,
        pods_affected=[pod_key(p) for p in moves.evict],
        gpus_affected=1,
        gpu_hours_at_risk=gpu_hours_at_risk(moves.evict, params, ctx.settings),
        blockers=moves.blockers + gpu_problems(node, gpu, "isolate"),
    )


@ISOLATE.step
def hold_node(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> StepResult:
    return cordon(ctx, str(plan.target.node), action_reason(plan, params.reason))


@ISOLATE.step
def checkpoint(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> StepResult:
    moves = holders(ctx, str(plan.target.node), int(plan.target.gpu or 0), params)
    return request_checkpoints(ctx, moves.evict, params)


@ISOLATE.step
def evict(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> StepResult:
    node, gpu = str(plan.target.node), int(plan.target.gpu or 0)
    moves = holders(ctx, node, gpu, params)
    if moves.blockers:
        return StepResult(False, "; ".join(moves.blockers))
    result = evict_pods(ctx, moves.evict, params)
    if not result.ok:
        return result
    gone = wait_gone(ctx, node, {pod_key(p) for p in moves.evict}, params.timeout_s or ctx.settings.drain_timeout_s)
    return StepResult(gone.ok, f"{result.detail}; {gone.detail}", {**result.data, **gone.data})


@ISOLATE.step
def fence(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> StepResult:
    node, gpu = str(plan.target.node), int(plan.target.gpu or 0)
    name = request_name(plan, ctx, "isolate")
    ctx.cluster.request_gpu_fence(node, gpu, name=name)
    return wait_request(ctx, ctx.cluster.get_gpu_fence, name,
                        params.fence_timeout_s or ctx.settings.gpu_reset_timeout_s)


@ISOLATE.step
def release_node(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> StepResult:
    return release(ctx, plan, str(plan.target.node))


@ISOLATE.verify
def _verify(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> StepResult:
    name = request_name(plan, ctx, "isolate")
    try:
        request = ctx.cluster.get_gpu_fence(name)
    except NotFound:
        return StepResult(False, f"no GPUFence request {name}: this plan has not fenced the GPU")
    if request.phase != "Succeeded":
        return StepResult(False, f"{name} is {request.phase}: {request.message}")
    node, gpu = ctx.cluster.get_node(str(plan.target.node)), int(plan.target.gpu or 0)
    gone = set(ctx.withheld_gpus(node.name)) | {gpu}
    if node.gpu_allocatable > node.gpu_capacity - len(gone):
        return StepResult(False, f"{node.name} still reports {node.gpu_allocatable}/{node.gpu_capacity} GPUs "
                                 f"allocatable after {name}: the device plugin still offers GPU {gpu}",
                          {"allocatable": node.gpu_allocatable})
    if node.unschedulable and cordoned_by_plan(node, plan):
        return StepResult(False, f"{node.name} is still cordoned by this action")
    return StepResult(True, f"GPU {gpu} on {node.name} is fenced off; the node serves with "
                            f"{node.gpu_allocatable}/{node.gpu_capacity} GPUs", {"allocatable": node.gpu_allocatable})


@ISOLATE.rollback
def _rollback(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> StepResult:
    """The pods moved stay where they are; the node takes new pods again (only this action's cordon is lifted).
    A fence that went through stays: the GPU is the failing one."""
    return release(ctx, plan, str(plan.target.node))
