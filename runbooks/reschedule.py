"""reschedule_pods: move the pods off a slow GPU or node. The node is tainted (or cordoned) so the
scheduler places them elsewhere, training jobs checkpoint, then the pods are evicted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from connectors.kubernetes import PodInfo, Taint
from runbooks.context import RunbookContext
from runbooks.cordon import action_reason, cordon, find_node, release
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.pods import (
    Evacuation,
    EvacuationParams,
    describe_moves,
    evacuate,
    free_gpus,
    gpu_hours_at_risk,
    is_training_pod,
    placed,
    pod_key,
    request_checkpoints,
    sort_pods,
)


class RescheduleParams(EvacuationParams):
    """Which pods to move and how to keep them from coming back."""

    gpu: int | None = Field(default=None, ge=0, description="only the pods on this GPU; None = every GPU pod")
    keep_off: Literal["taint", "cordon"] = Field(
        default="taint", description="taint the node NoSchedule (gpuops' key) or cordon it"
    )


RESCHEDULE = Runbook[RescheduleParams](
    RunbookDefinition(
        name="reschedule_pods",
        title="Move pods off a slow GPU or node",
        description=(
            "Taint (or cordon) the node so new pods land elsewhere, ask training jobs to checkpoint, then evict "
            "the GPU pods on the node (or on one GPU) so their controllers recreate them on other nodes."
        ),
        risk=Risk.MEDIUM,
        target_kind=TargetKind.NODE,
        params_model=RescheduleParams,
        disruptive=True,
        auto_approvable=False,
        expected_effect="no GPU pod of the chosen kind remains on the node (or GPU); the node keeps new pods away",
        verify_deadline_s=120,
        has_rollback=True,
    )
)


def taint_for(params: RescheduleParams, ctx: RunbookContext) -> Taint:
    value = f"gpu-{params.gpu}" if params.gpu is not None else "slow"
    return Taint(ctx.settings.action_taint_key, "NoSchedule", value)


def selected(ctx: RunbookContext, node: str, params: RescheduleParams) -> Evacuation:
    def wanted(pod: PodInfo) -> bool:
        if params.gpu is not None:
            return params.gpu in pod.gpu_indices
        return pod.gpu_count > 0

    return sort_pods(ctx.cluster.list_pods(node), params, wanted)


def movable(ctx: RunbookContext, node: str, params: RescheduleParams) -> Evacuation:
    """The pods to move, with what blocks moving them: their own blockers, and no room for them elsewhere (read
    from every node, so only where the move is decided: the precondition, the rehearsal and the eviction)."""
    moves = selected(ctx, node, params)
    moves.blockers.extend(no_room(ctx, node, moves.evict))
    return moves


def no_room(ctx: RunbookContext, node: str, moving: list[PodInfo]) -> list[str]:
    """Moving pods off a slow GPU helps only where they can run elsewhere: a rank of a gang-scheduled job that
    finds no room stays pending and stops its whole job, far worse than running at a straggler's pace. The pods,
    largest first, each go to the node with the most free GPUs among the other nodes that take new pods
    (`runbooks.pods.free_gpus`)."""
    wanted = sorted((p for p in moving if p.gpu_count > 0), key=lambda p: -p.gpu_count)
    if not wanted:
        return []
    fitted, most = placed(free_gpus(ctx, exclude=node), (p.gpu_count for p in wanted))
    if fitted < len(wanted):
        pod = wanted[fitted]
        return [f"no room elsewhere for {pod_key(pod)} ({pod.gpu_count} GPUs): the most free GPUs on another "
                f"node that takes new pods is {most}; moving it would stop its job, not speed it up"]
    return []


@RESCHEDULE.risk
def _risk(plan: Plan, params: RescheduleParams, ctx: RunbookContext) -> Risk:
    moves = selected(ctx, str(plan.target.node), params)
    return Risk.HIGH if any(is_training_pod(p, ctx.settings) for p in moves.evict) else Risk.MEDIUM


@RESCHEDULE.precondition
def _pre(plan: Plan, params: RescheduleParams, ctx: RunbookContext) -> list[str]:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return problems
    if params.gpu is not None and params.gpu >= node.gpu_capacity:
        return [f"{node.name} has {node.gpu_capacity} GPUs; there is no GPU {params.gpu}"]
    return movable(ctx, node.name, params).blockers


@RESCHEDULE.dry_run
def _dry(plan: Plan, params: RescheduleParams, ctx: RunbookContext) -> Diff:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return Diff(blockers=problems)
    moves = movable(ctx, node.name, params)
    taint = taint_for(params, ctx)
    keep = (
        f"taint {node.name} {taint.key}={taint.value}:{taint.effect}"
        if params.keep_off == "taint"
        else f"cordon {node.name}"
    )
    return Diff(
        changes=[keep, *describe_moves(moves, params, ctx.settings)],
        pods_affected=[pod_key(p) for p in moves.evict],
        gpus_affected=sum(p.gpu_count for p in moves.evict),
        gpu_hours_at_risk=gpu_hours_at_risk(moves.evict, params, ctx.settings),
        blockers=moves.blockers,
    )


@RESCHEDULE.step
def keep_off(plan: Plan, params: RescheduleParams, ctx: RunbookContext) -> StepResult:
    node = str(plan.target.node)
    if params.keep_off == "cordon":
        return cordon(ctx, node, action_reason(plan, params.reason))
    taint = taint_for(params, ctx)
    ctx.cluster.add_taint(node, taint)
    return StepResult(True, f"tainted {node} {taint.key}={taint.value}:{taint.effect}")


@RESCHEDULE.step
def checkpoint(plan: Plan, params: RescheduleParams, ctx: RunbookContext) -> StepResult:
    return request_checkpoints(ctx, selected(ctx, str(plan.target.node), params).evict, params)


@RESCHEDULE.step
def evict(plan: Plan, params: RescheduleParams, ctx: RunbookContext) -> StepResult:
    node = str(plan.target.node)
    return evacuate(ctx, node, movable(ctx, node, params), params)


@RESCHEDULE.verify
def _verify(plan: Plan, params: RescheduleParams, ctx: RunbookContext) -> StepResult:
    node = ctx.cluster.get_node(str(plan.target.node))
    left = [pod_key(p) for p in selected(ctx, node.name, params).evict]
    if left:
        return StepResult(False, f"still on {node.name}: {', '.join(left)}", {"remaining": left})
    kept = taint_for(params, ctx) in node.taints if params.keep_off == "taint" else node.unschedulable
    if not kept:
        return StepResult(False, f"{node.name} no longer keeps new pods away")
    return StepResult(True, f"the pods left {node.name}" + (f" GPU {params.gpu}" if params.gpu is not None else ""))


@RESCHEDULE.rollback
def _rollback(plan: Plan, params: RescheduleParams, ctx: RunbookContext) -> StepResult:
    """Moved pods stay where they are; the node takes new pods again (only gpuops' own mark is removed)."""
    node = str(plan.target.node)
    if params.keep_off == "cordon":
        return release(ctx, plan, node)
    taint = taint_for(params, ctx)
    after = ctx.cluster.remove_taint(node, taint.key, taint.effect)
    return StepResult(taint not in after.taints, f"removed taint {taint.key} from {node}")
