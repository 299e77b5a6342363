"""reset_gpu: move only the pods holding one GPU (checkpointing training jobs first), keep new pods off
the node meanwhile with a temporary cordon, then have the node agent reset the GPU (a GPUReset request)."""

from __future__ import annotations

from pydantic import Field

from connectors.kubernetes import NodeInfo, NotFound, PodInfo
from runbooks.context import RunbookContext
from runbooks.cordon import action_reason, cordon, find_node, release
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.node_agent import request_name, wait_request
from runbooks.pods import (
    Evacuation,
    EvacuationParams,
    describe_moves,
    evacuate,
    gpu_hours_at_risk,
    is_training_pod,
    pod_key,
    request_checkpoints,
    sort_pods,
)

# The verification's data key when the reset ran but the node still offers fewer GPUs (the GPU did not come back):
# what the executor reads to follow the reset with a reboot.
NOT_BACK = "allocatable"


class ResetGpuParams(EvacuationParams):
    """How to clear and reset one GPU."""

    reset_timeout_s: float | None = Field(default=None, gt=0, le=86_400, description="default from settings")


RESET = Runbook[ResetGpuParams](
    RunbookDefinition(
        name="reset_gpu",
        title="Reset a GPU",
        description=(
            "Evict only the pods using one GPU (training jobs checkpoint first), then reset it through the "
            "node agent (nvidia-smi --gpu-reset). The node is cordoned meanwhile and uncordoned afterwards."
        ),
        risk=Risk.MEDIUM,
        target_kind=TargetKind.GPU,
        params_model=ResetGpuParams,
        disruptive=True,
        takes="gpu",
        auto_approvable=False,
        expected_effect="the GPUReset request Succeeded and the node reports all its GPUs allocatable again "
                        "(short of any it returned to service without, which wait for repair)",
        verify_deadline_s=120,
        has_rollback=False,
    )
)


def holders(ctx: RunbookContext, node: str, gpu: int, params: EvacuationParams) -> Evacuation:
    def on_gpu(pod: PodInfo) -> bool:
        return gpu in pod.gpu_indices

    return sort_pods(ctx.cluster.list_pods(node), params, on_gpu)


def gpu_problems(node: NodeInfo | None, gpu: int, doing: str = "reset") -> list[str]:
    """Why the node agent cannot `doing` (reset, fence) this GPU of the node: there is no such GPU, or the node
    is not Ready."""
    if node is None:
        return []
    if gpu >= node.gpu_capacity:
        return [f"{node.name} has {node.gpu_capacity} GPUs; there is no GPU {gpu}"]
    if node.ready is not True:
        return [f"{node.name} is not Ready; the node agent cannot {doing} a GPU there"]
    return []


@RESET.risk
def gpu_risk(plan: Plan, params: EvacuationParams, ctx: RunbookContext) -> Risk:
    target = plan.target
    moves = holders(ctx, str(target.node), int(target.gpu or 0), params)
    return Risk.HIGH if any(is_training_pod(p, ctx.settings) for p in moves.evict) else Risk.MEDIUM


@RESET.precondition
def _pre(plan: Plan, params: ResetGpuParams, ctx: RunbookContext) -> list[str]:
    node, problems = find_node(ctx, str(plan.target.node))
    gpu = int(plan.target.gpu or 0)
    problems += gpu_problems(node, gpu)
    if node is None or problems:
        return problems
    return holders(ctx, node.name, gpu, params).blockers


def one_gpu_diff(plan: Plan, params: EvacuationParams, ctx: RunbookContext, *, verb: str, doing: str, request: str,
                 after: str, gpus: int | None = None, extra_hours: float = 0.0) -> Diff:
    """The rehearsal of a runbook that moves only one GPU's pods under a temporary cordon, then sends the node agent
    a request: `verb` is the node agent's work ("reset", "isolate"), `doing` the GPU's state meanwhile, `request`
    and `after` describe the request and the cordon's lift (formatted with `node` and `gpu`), `gpus` the GPUs
    affected (the moved pods' by default)."""
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return Diff(blockers=problems)
    gpu = int(plan.target.gpu or 0)
    moves = holders(ctx, node.name, gpu, params)
    hold = [] if node.unschedulable else [f"cordon {node.name} while GPU {gpu} is {doing}"]
    lift = [] if node.unschedulable else [after.format(node=node.name, gpu=gpu)]
    return Diff(
        changes=hold + describe_moves(moves, params, ctx.settings) + [request.format(node=node.name, gpu=gpu)] + lift,
        pods_affected=[pod_key(p) for p in moves.evict],
        gpus_affected=gpus if gpus is not None else max(1, sum(p.gpu_count for p in moves.evict)),
        gpu_hours_at_risk=round(gpu_hours_at_risk(moves.evict, params, ctx.settings) + extra_hours, 3),
        blockers=moves.blockers + gpu_problems(node, gpu, verb),
    )


@RESET.dry_run
def _dry(plan: Plan, params: ResetGpuParams, ctx: RunbookContext) -> Diff:
    return one_gpu_diff(plan, params, ctx, verb="reset", doing="reset", after="uncordon {node}",
                        request="reset GPU {gpu} on {node} (GPUReset request to the node agent)",
                        extra_hours=ctx.settings.expected_gpu_reset_s / 3600.0)


@RESET.step
def hold_node(plan: Plan, params: EvacuationParams, ctx: RunbookContext) -> StepResult:
    return cordon(ctx, str(plan.target.node), action_reason(plan, params.reason))


@RESET.step
def checkpoint(plan: Plan, params: EvacuationParams, ctx: RunbookContext) -> StepResult:
    moves = holders(ctx, str(plan.target.node), int(plan.target.gpu or 0), params)
    return request_checkpoints(ctx, moves.evict, params)


@RESET.step
def evict(plan: Plan, params: EvacuationParams, ctx: RunbookContext) -> StepResult:
    node, gpu = str(plan.target.node), int(plan.target.gpu or 0)
    return evacuate(ctx, node, holders(ctx, node, gpu, params), params)


@RESET.step
def reset(plan: Plan, params: ResetGpuParams, ctx: RunbookContext) -> StepResult:
    node, gpu = str(plan.target.node), int(plan.target.gpu or 0)
    name = request_name(plan, ctx, "reset")
    ctx.cluster.request_gpu_reset(node, gpu, name=name, uuid=ctx.gpu_uuid(ctx.incident_id, node, gpu))
    return wait_request(
        ctx, ctx.cluster.get_gpu_reset, name, params.reset_timeout_s or ctx.settings.gpu_reset_timeout_s
    )


@RESET.step
def release_node(plan: Plan, params: EvacuationParams, ctx: RunbookContext) -> StepResult:
    return release(ctx, plan, str(plan.target.node))


@RESET.verify
def _verify(plan: Plan, params: ResetGpuParams, ctx: RunbookContext) -> StepResult:
    name = request_name(plan, ctx, "reset")
    try:
        request = ctx.cluster.get_gpu_reset(name)
    except NotFound:
        return StepResult(False, f"no GPUReset request {name}: this plan has not reset the GPU")
    node = ctx.cluster.get_node(str(plan.target.node))
    if request.phase != "Succeeded":
        return StepResult(False, f"{name} is {request.phase}: {request.message}")
    if node.ready is not True:
        return StepResult(False, f"{node.name} is not Ready after the reset")
    withheld = ctx.withheld_gpus(node.name)
    if node.gpu_allocatable < node.gpu_capacity - len(withheld):
        short = f" (GPU {', '.join(map(str, withheld))} withheld, waiting for repair)" if withheld else ""
        return StepResult(
            False,
            f"{node.name} reports {node.gpu_allocatable}/{node.gpu_capacity} GPUs allocatable{short}",
            {NOT_BACK: node.gpu_allocatable},
        )
    return StepResult(True, f"GPU {plan.target.gpu} on {node.name} is back ({node.gpu_allocatable} GPUs allocatable)")
