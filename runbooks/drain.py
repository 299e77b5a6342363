"""drain_node: cordon, ask training jobs to checkpoint, evict every pod through the Eviction API
(retrying those a PodDisruptionBudget blocks until the deadline), wait until they are gone.
A drain that cannot finish leaves the node cordoned and says so."""

from __future__ import annotations

from connectors.kubernetes import PodInfo
from runbooks.context import RunbookContext
from runbooks.cordon import action_reason, cordon, find_node, release
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.pods import (
    Evacuation,
    EvacuationParams,
    describe_moves,
    evict_pods,
    gpu_hours_at_risk,
    is_training_pod,
    pod_key,
    request_checkpoints,
    sort_pods,
)


class DrainParams(EvacuationParams):
    """How to drain a node (the flags of `kubectl drain`, plus checkpointing)."""


DRAIN = Runbook[DrainParams](
    RunbookDefinition(
        name="drain_node",
        title="Drain a node",
        description=(
            "Cordon the node, ask training jobs to checkpoint, then evict its pods through the Eviction API, "
            "honouring PodDisruptionBudgets; DaemonSet and mirror pods stay."
        ),
        risk=Risk.MEDIUM,
        target_kind=TargetKind.NODE,
        params_model=DrainParams,
        disruptive=True,
        auto_approvable=False,
        expected_effect="the node is cordoned and runs no pods except DaemonSet and mirror pods",
        verify_deadline_s=120,
        has_rollback=True,
    )
)


def evacuation(ctx: RunbookContext, node: str, params: EvacuationParams) -> Evacuation:
    return sort_pods(ctx.cluster.list_pods(node), params)


def left_cordoned(node: str) -> str:
    return f"{node} is left cordoned; uncordon_node undoes it"


def staying(pod: PodInfo) -> bool:
    """Pods a drain leaves where they are."""
    return pod.is_daemonset or pod.is_mirror


@DRAIN.risk
def _risk(plan: Plan, params: DrainParams, ctx: RunbookContext) -> Risk:
    pods = ctx.cluster.list_pods(str(plan.target.node))
    return Risk.HIGH if any(is_training_pod(p, ctx.settings) and not staying(p) for p in pods) else Risk.MEDIUM


@DRAIN.precondition
def _pre(plan: Plan, params: DrainParams, ctx: RunbookContext) -> list[str]:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return problems
    return evacuation(ctx, node.name, params).blockers


@DRAIN.dry_run
def drain_diff(plan: Plan, params: DrainParams, ctx: RunbookContext) -> Diff:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return Diff(blockers=problems)
    moves = evacuation(ctx, node.name, params)
    changes = [] if node.unschedulable else [f"cordon {node.name}"]
    return Diff(
        changes=changes + describe_moves(moves, params, ctx.settings),
        pods_affected=[pod_key(p) for p in moves.evict],
        gpus_affected=sum(p.gpu_count for p in moves.evict),
        gpu_hours_at_risk=gpu_hours_at_risk(moves.evict, params, ctx.settings),
        blockers=moves.blockers,
    )


@DRAIN.step
def cordon_node(plan: Plan, params: DrainParams, ctx: RunbookContext) -> StepResult:
    return cordon(ctx, str(plan.target.node), action_reason(plan, params.reason))


@DRAIN.step
def checkpoint(plan: Plan, params: DrainParams, ctx: RunbookContext) -> StepResult:
    node = str(plan.target.node)
    result = request_checkpoints(ctx, evacuation(ctx, node, params).evict, params)
    if not result.ok:
        result.detail += f"; {left_cordoned(node)}"
    return result


@DRAIN.step
def evict(plan: Plan, params: DrainParams, ctx: RunbookContext) -> StepResult:
    node = str(plan.target.node)
    moves = evacuation(ctx, node, params)
    if moves.blockers:
        return StepResult(False, "; ".join(moves.blockers) + f"; {left_cordoned(node)}")
    result = evict_pods(ctx, moves.evict, params)
    if not result.ok:
        result.detail += f"; {left_cordoned(node)}"
        result.data["left_cordoned"] = True
    return result


@DRAIN.step
def wait_empty(plan: Plan, params: DrainParams, ctx: RunbookContext) -> StepResult:
    node = str(plan.target.node)
    deadline = params.timeout_s or ctx.settings.drain_timeout_s

    def empty() -> bool | None:
        return True if all(staying(p) for p in ctx.cluster.list_pods(node)) else None

    if ctx.poll(deadline, empty):
        return StepResult(True, f"{node} drained")
    left = sorted(pod_key(p) for p in ctx.cluster.list_pods(node) if not staying(p))
    return StepResult(
        False,
        f"pods still on {node} after {deadline:g}s: {', '.join(left)}; {left_cordoned(node)}",
        {"remaining": left, "left_cordoned": True},
    )


@DRAIN.verify
def _verify(plan: Plan, params: DrainParams, ctx: RunbookContext) -> StepResult:
    node = ctx.cluster.get_node(str(plan.target.node))
    left = sorted(pod_key(p) for p in ctx.cluster.list_pods(node.name) if not staying(p))
    if not node.unschedulable:
        return StepResult(False, f"{node.name} is schedulable again")
    if left:
        return StepResult(False, f"{node.name} still runs {', '.join(left)}", {"remaining": left})
    return StepResult(True, f"{node.name} is cordoned and drained")


@DRAIN.rollback
def _rollback(plan: Plan, params: DrainParams, ctx: RunbookContext) -> StepResult:
    """Evicted pods are not brought back (their controllers recreate them); the cordon is lifted if this
    drain made it."""
    return release(ctx, plan, str(plan.target.node))
