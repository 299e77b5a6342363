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

from runbooks import reset_gpu
from runbooks.context import RunbookContext
from runbooks.cordon import cordoned_by_plan, find_node
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.fence_gpu import fenced, request_fence
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.pods import (
    EvacuationParams,
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


ISOLATE.risk(reset_gpu.gpu_risk)  # training pods on the GPU make it high, as for a reset


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
    return reset_gpu.one_gpu_diff(
        plan, params, ctx, verb="isolate", doing="isolated", gpus=1,
        after="uncordon {node}: it serves on with its other GPUs",
        request="fence GPU {gpu} off on {node} (GPUFence request to the node agent): the device plugin no longer "
                "gives it to pods until the node reboots")


# The same steps as a GPU reset's up to the node agent's request: hold the node, checkpoint, move that GPU's pods.
ISOLATE.step(reset_gpu.hold_node)
ISOLATE.step(reset_gpu.checkpoint)
ISOLATE.step(reset_gpu.evict)


@ISOLATE.step
def fence(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> StepResult:
    return request_fence(plan, ctx, params.fence_timeout_s)


ISOLATE.step(reset_gpu.release_node)


@ISOLATE.verify
def _verify(plan: Plan, params: IsolateGpuParams, ctx: RunbookContext) -> StepResult:
    done = fenced(plan, ctx)
    if not done.ok:
        return done
    node = ctx.cluster.get_node(str(plan.target.node))
    if node.unschedulable and cordoned_by_plan(node, plan):
        return StepResult(False, f"{node.name} is still cordoned by this action")
    return StepResult(True, f"{done.detail}; {node.name} serves with its other GPUs", done.data)


# The pods moved stay where they are; the node takes new pods again (only this action's cordon is lifted). A
# fence that went through stays: the GPU is the failing one.
ISOLATE.rollback(reset_gpu.release_node)
