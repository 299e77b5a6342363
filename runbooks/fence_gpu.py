"""fence_gpu: take one GPU that needs replacing from the device plugin, so its node can serve with the others.

A GPU whose fault no reset or reboot fixes (its cooling, its PCIe link, its memory) keeps its whole node out of
service until the part is replaced, a day or more, while the device plugin would give it to the next pod. The
node agent puts the GPU in the driver's drain state and restarts the device plugin (a GPUFence request,
runbooks/NODE_AGENT.md): the node's allocatable drops by one, and the node can return with its other GPUs. Only
on a node gpuops holds out of service, with nothing on the GPU."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from connectors.kubernetes import NodeInfo, NotFound
from runbooks.context import RunbookContext
from runbooks.cordon import find_node
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.node_agent import request_name, wait_request
from runbooks.reset_gpu import gpu_problems


class FenceGpuParams(BaseModel):
    """How to fence one GPU off."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500, description="why, written to the audit trail")
    timeout_s: float | None = Field(default=None, gt=0, le=86_400, description="default from settings")


FENCE = Runbook[FenceGpuParams](
    RunbookDefinition(
        name="fence_gpu",
        title="Fence a GPU off",
        description=(
            "Have the node agent put one GPU in the driver's drain state and restart the device plugin, so no pod "
            "is given that GPU until the node reboots. Only on a node gpuops cordoned, with no pod on the GPU."
        ),
        risk=Risk.LOW,  # the node is out of service already and nothing runs on the GPU; it takes one GPU away
        target_kind=TargetKind.GPU,
        params_model=FenceGpuParams,
        disruptive=False,
        auto_approvable=True,
        expected_effect="the GPUFence request Succeeded and the node reports one GPU fewer allocatable",
        verify_deadline_s=120,
        has_rollback=False,
    )
)


def _problems(ctx: RunbookContext, node: NodeInfo | None, gpu: int) -> list[str]:
    if node is None or gpu_problems(node, gpu, "fence"):
        return gpu_problems(node, gpu, "fence")
    if not (node.unschedulable and node.cordoned_by_gpuops):
        return [f"{node.name} is not out of service by gpuops' cordon; gpuops fences a GPU only on a node it holds"]
    live = [p for p in ctx.cluster.list_pods(node.name) if p.phase in ("Pending", "Running") and p.gpu_count]
    holders = [p.name for p in live if gpu in p.gpu_indices or not p.gpu_indices]  # unknown indices: maybe ours
    if holders:
        return [f"GPU {gpu} on {node.name} may be held by {', '.join(sorted(holders))}; move them first"]
    return []


@FENCE.precondition
def _pre(plan: Plan, params: FenceGpuParams, ctx: RunbookContext) -> list[str]:
    node, problems = find_node(ctx, str(plan.target.node))
    return problems + _problems(ctx, node, int(plan.target.gpu or 0))


@FENCE.dry_run
def _dry(plan: Plan, params: FenceGpuParams, ctx: RunbookContext) -> Diff:
    node, problems = find_node(ctx, str(plan.target.node))
    gpu = int(plan.target.gpu or 0)
    if node is None:
        return Diff(blockers=problems)
    return Diff(changes=[f"fence GPU {gpu} off on {node.name} (GPUFence request to the node agent): the device "
                         f"plugin no longer gives it to pods until the node reboots"],
                gpus_affected=1, blockers=_problems(ctx, node, gpu))


def request_fence(plan: Plan, ctx: RunbookContext, timeout_s: float | None) -> StepResult:
    """Ask the node agent to fence the plan's GPU (a GPUFence request) and wait for its answer."""
    node, gpu = str(plan.target.node), int(plan.target.gpu or 0)
    name = request_name(plan, ctx, "fence")
    ctx.cluster.request_gpu_fence(node, gpu, name=name, uuid=ctx.gpu_uuid(ctx.incident_id, node, gpu))
    return wait_request(ctx, ctx.cluster.get_gpu_fence, name, timeout_s or ctx.settings.gpu_reset_timeout_s)


def fenced(plan: Plan, ctx: RunbookContext) -> StepResult:
    """Whether this plan's GPUFence request Succeeded and the node offers the GPU no more."""
    name = request_name(plan, ctx, "fence")
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
    return StepResult(True, f"GPU {gpu} on {node.name} is fenced off ({node.gpu_allocatable}/{node.gpu_capacity} "
                            "allocatable)", {"allocatable": node.gpu_allocatable})


@FENCE.step
def fence(plan: Plan, params: FenceGpuParams, ctx: RunbookContext) -> StepResult:
    return request_fence(plan, ctx, params.timeout_s)


@FENCE.verify
def _verify(plan: Plan, params: FenceGpuParams, ctx: RunbookContext) -> StepResult:
    return fenced(plan, ctx)
