"""cordon_node and uncordon_node. gpuops marks its own cordons with the connector's annotation and only
ever uncordons a node that carries it: a node someone else cordoned stays cordoned."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from connectors.kubernetes import NodeInfo, NotCordonedByGpuops, NotFound, Taint
from connectors.kubernetes.annotations import CORDON_REASON, CORDONED_BY
from runbooks.context import RunbookContext
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind

NOT_OURS = "gpuops never uncordons a node it did not cordon"


class NodeParams(BaseModel):
    """Parameters of a runbook acting on one node."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500, description="why, written to the node and the audit trail")


class UncordonParams(NodeParams):
    """An uncordon may return the node for some work only: `taint_key` (a gpuops.io/ key) with `taint_value` goes on
    as a NoSchedule taint before the cordon is lifted, so no pod that does not tolerate it lands in between; and
    `lift_taint_key` removes gpuops' own taint of that key (the part it stood for was repaired)."""

    taint_key: str = Field(default="", pattern=r"^(gpuops\.io/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$",
                           description="a gpuops.io/ taint (NoSchedule) the node returns under; empty for none")
    taint_value: str = Field(default="", pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
    lift_taint_key: str = Field(default="", pattern=r"^(gpuops\.io/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$",
                                description="a gpuops.io/ taint to remove as the node returns; empty for none")

    def taint(self) -> Taint | None:
        return Taint(self.taint_key, "NoSchedule", self.taint_value) if self.taint_key else None


def find_node(ctx: RunbookContext, node: str) -> tuple[NodeInfo | None, list[str]]:
    """The node, or a problem saying it does not exist."""
    try:
        return ctx.cluster.get_node(node), []
    except NotFound:
        return None, [f"node {node} does not exist"]


def cordon(ctx: RunbookContext, node: str, reason: str) -> StepResult:
    """Mark the node unschedulable with gpuops' annotation; a node someone else cordoned is left theirs."""
    before = ctx.cluster.get_node(node)
    if before.unschedulable and not before.cordoned_by_gpuops:
        return StepResult(
            True, f"{node} was already cordoned by someone else; left as it was", {"cordoned_by_gpuops": False}
        )
    after = ctx.cluster.cordon(node, reason=reason or "gpuops action", incident=ctx.incident_label())
    if not after.unschedulable:
        return StepResult(False, f"{node} is still schedulable after the cordon")
    verb = "already cordoned by gpuops" if before.cordoned_by_gpuops else "cordoned"
    return StepResult(
        True,
        f"{verb} {node}" if verb == "cordoned" else f"{node} {verb}",
        {"cordoned_by_gpuops": after.cordoned_by_gpuops},
    )


def uncordon(ctx: RunbookContext, node: str) -> StepResult:
    """Make the node schedulable again, only if gpuops cordoned it."""
    try:
        after = ctx.cluster.uncordon(node)
    except NotCordonedByGpuops as exc:
        return StepResult(False, f"{exc} ({NOT_OURS})")
    if after.unschedulable:
        return StepResult(False, f"{node} is still cordoned")
    return StepResult(True, f"uncordoned {node}")


def action_reason(plan: Plan, reason: str) -> str:
    """The cordon reason written on the node, ending in a tag naming this very plan."""
    return f"{reason or plan.runbook} [{action_tag(plan)}]"


def action_tag(plan: Plan) -> str:
    return f"{plan.runbook}:{plan.plan_hash()[:12]}"


def cordoned_by_plan(node: NodeInfo, plan: Plan) -> bool:
    """Whether the node's cordon is the one this very plan made."""
    return node.cordoned_by_gpuops and node.annotations.get(CORDON_REASON, "").endswith(f"[{action_tag(plan)}]")


def release(ctx: RunbookContext, plan: Plan, node: str) -> StepResult:
    """Lift a temporary cordon, but only the one this plan made (not an older one, not someone else's)."""
    current = ctx.cluster.get_node(node)
    if not current.unschedulable:
        return StepResult(True, f"{node} is schedulable")
    if not current.cordoned_by_gpuops:
        return StepResult(True, f"{node} left cordoned: someone else cordoned it and {NOT_OURS}")
    if not cordoned_by_plan(current, plan):
        return StepResult(True, f"{node} left cordoned: gpuops' cordon predates this action")
    return uncordon(ctx, node)


# ---------------------------------------------------------------- cordon_node

CORDON = Runbook[NodeParams](
    RunbookDefinition(
        name="cordon_node",
        title="Cordon a node",
        description="Mark a node unschedulable so no new pods land on it; running pods keep running.",
        risk=Risk.LOW,
        target_kind=TargetKind.NODE,
        params_model=NodeParams,
        disruptive=True,
        auto_approvable=True,
        expected_effect="the node is unschedulable; gpuops' annotation marks the cordon as its own",
        verify_deadline_s=30,
        has_rollback=True,
    )
)


@CORDON.precondition
def _cordon_pre(plan: Plan, params: NodeParams, ctx: RunbookContext) -> list[str]:
    return find_node(ctx, str(plan.target.node))[1]


@CORDON.dry_run
def _cordon_dry(plan: Plan, params: NodeParams, ctx: RunbookContext) -> Diff:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return Diff(blockers=problems)
    if node.unschedulable:
        return Diff(changes=[f"none: {node.name} is already cordoned"])
    return Diff(changes=[f"cordon {node.name}"], gpus_affected=node.gpu_allocatable)


@CORDON.step
def _cordon(plan: Plan, params: NodeParams, ctx: RunbookContext) -> StepResult:
    return cordon(ctx, str(plan.target.node), action_reason(plan, params.reason))


@CORDON.verify
def _cordon_verify(plan: Plan, params: NodeParams, ctx: RunbookContext) -> StepResult:
    node = ctx.cluster.get_node(str(plan.target.node))
    return StepResult(node.unschedulable, f"{node.name} is {'cordoned' if node.unschedulable else 'still schedulable'}")


@CORDON.rollback
def _cordon_rollback(plan: Plan, params: NodeParams, ctx: RunbookContext) -> StepResult:
    return release(ctx, plan, str(plan.target.node))


# ---------------------------------------------------------------- uncordon_node

UNCORDON = Runbook[UncordonParams](
    RunbookDefinition(
        name="uncordon_node",
        title="Uncordon a node gpuops cordoned",
        description="Make a node schedulable again, optionally under a gpuops.io/ NoSchedule taint (returned for the "
                    "work that tolerates it) or lifting one. Refuses nodes that gpuops did not cordon itself.",
        risk=Risk.LOW,  # it only undoes gpuops' own cordon (precondition), after a probation found the node healthy
        target_kind=TargetKind.NODE,
        params_model=UncordonParams,
        disruptive=False,
        auto_approvable=True,
        expected_effect="the node is schedulable and no longer carries gpuops' cordon annotation (with the taint "
                        "asked for, without the one lifted)",
        verify_deadline_s=30,
        has_rollback=True,
    )
)


@UNCORDON.precondition
def _uncordon_pre(plan: Plan, params: UncordonParams, ctx: RunbookContext) -> list[str]:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return problems
    if not node.unschedulable:
        return [f"{node.name} is not cordoned"]
    if not node.cordoned_by_gpuops:
        return [f"{node.name} was cordoned by someone else (no {CORDONED_BY} annotation); {NOT_OURS}"]
    return []


@UNCORDON.dry_run
def _uncordon_dry(plan: Plan, params: UncordonParams, ctx: RunbookContext) -> Diff:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return Diff(blockers=problems)
    taint = params.taint()
    return Diff(changes=[*([f"taint {node.name} {taint.key}={taint.value}:NoSchedule"] if taint else []),
                         f"uncordon {node.name}", f"remove gpuops' cordon annotations from {node.name}",
                         *([f"remove taint {params.lift_taint_key} from {node.name}"] if params.lift_taint_key
                           else [])])


@UNCORDON.step
def _uncordon(plan: Plan, params: UncordonParams, ctx: RunbookContext) -> StepResult:
    node, taint = str(plan.target.node), params.taint()
    if taint is not None and taint not in ctx.cluster.add_taint(node, taint).taints:
        return StepResult(False, f"{node} does not carry {taint.key}={taint.value}:NoSchedule after adding it")
    if params.lift_taint_key:
        ctx.cluster.remove_taint(node, params.lift_taint_key)
    result = uncordon(ctx, node)
    if taint is None or not result.ok:
        return result
    return StepResult(True, f"{result.detail}, tainted {taint.key}={taint.value}:NoSchedule")


@UNCORDON.verify
def _uncordon_verify(plan: Plan, params: UncordonParams, ctx: RunbookContext) -> StepResult:
    node, taint = ctx.cluster.get_node(str(plan.target.node)), params.taint()
    problems = [*(["still cordoned"] if node.unschedulable else []),
                *([f"without taint {taint.key}"] if taint is not None and taint not in node.taints else []),
                *([f"still tainted {params.lift_taint_key}"] if params.lift_taint_key
                  and any(t.key == params.lift_taint_key for t in node.taints) else [])]
    what = f"schedulable{f', tainted {taint.key}={taint.value}:NoSchedule' if taint else ''}"
    return StepResult(not problems, f"{node.name} is {'; '.join(problems) if problems else what}")


@UNCORDON.rollback
def _uncordon_rollback(plan: Plan, params: UncordonParams, ctx: RunbookContext) -> StepResult:
    return cordon(ctx, str(plan.target.node), action_reason(plan, params.reason))
