"""taint_node: put one of gpuops' own taints on a node (keys under gpuops.io/, so a rollback only
ever removes a taint gpuops owns)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.kubernetes import Taint
from runbooks.context import RunbookContext
from runbooks.cordon import find_node
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind

TAINT_PREFIX = "gpuops.io/"
KEY_PATTERN = r"^gpuops\.io/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
# NoSchedule, valued with the HCA: a node's InfiniBand port waits for its repair, and only work that stays inside
# the node (which tolerates this key) lands there meanwhile.
PORT_TAINT = "gpuops.io/fabric-degraded"


class TaintParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        default="gpuops.io/unhealthy",
        pattern=KEY_PATTERN,
        description="a taint key under gpuops.io/",
    )
    value: str = Field(default="", pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"
    reason: str = Field(default="", max_length=500)

    def taint(self) -> Taint:
        return Taint(self.key, self.effect, self.value)


TAINT = Runbook[TaintParams](
    RunbookDefinition(
        name="taint_node",
        title="Taint a node",
        description=(
            "Add a gpuops.io/ taint: NoSchedule keeps new pods away, PreferNoSchedule discourages them, "
            "NoExecute also evicts running pods that do not tolerate it."
        ),
        risk=Risk.LOW,
        target_kind=TargetKind.NODE,
        params_model=TaintParams,
        disruptive=True,
        auto_approvable=True,
        expected_effect="the node carries the taint",
        verify_deadline_s=30,
        has_rollback=True,
    )
)


@TAINT.risk
def _risk(plan: Plan, params: TaintParams, ctx: RunbookContext) -> Risk:
    return Risk.HIGH if params.effect == "NoExecute" else Risk.LOW


@TAINT.precondition
def _pre(plan: Plan, params: TaintParams, ctx: RunbookContext) -> list[str]:
    return find_node(ctx, str(plan.target.node))[1]


@TAINT.dry_run
def _dry(plan: Plan, params: TaintParams, ctx: RunbookContext) -> Diff:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return Diff(blockers=problems)
    line = f"taint {node.name} {params.key}={params.value}:{params.effect}"
    if params.taint() in node.taints:
        return Diff(changes=[f"none: {node.name} already has {params.key}={params.value}:{params.effect}"])
    affected = []
    if params.effect == "NoExecute":
        affected = [f"{p.namespace}/{p.name}" for p in ctx.cluster.list_pods(node.name) if not p.is_daemonset]
    return Diff(
        changes=[line] + [f"NoExecute evicts {p} unless it tolerates the taint" for p in affected],
        pods_affected=affected,
        gpus_affected=node.gpu_allocatable,
    )


def put_on(plan: Plan, taint: Taint, ctx: RunbookContext) -> StepResult:
    """Add `taint` to the plan's node (the step of both taint runbooks)."""
    node = ctx.cluster.add_taint(str(plan.target.node), taint)
    return StepResult(taint in node.taints, f"tainted {node.name} {taint.key}={taint.value}:{taint.effect}")


def carries(plan: Plan, taint: Taint, ctx: RunbookContext) -> StepResult:
    """Whether the plan's node carries `taint` (their verification)."""
    node = ctx.cluster.get_node(str(plan.target.node))
    ok = taint in node.taints
    return StepResult(ok, f"{node.name} {'has' if ok else 'lacks'} taint {taint.key}={taint.value}:{taint.effect}")


def take_off(plan: Plan, taint: Taint, ctx: RunbookContext) -> StepResult:
    """Remove `taint`'s key and effect from the plan's node (their rollback)."""
    node = ctx.cluster.remove_taint(str(plan.target.node), taint.key, taint.effect)
    return StepResult(taint not in node.taints, f"removed taint {taint.key}:{taint.effect} from {node.name}")


@TAINT.step
def add_taint(plan: Plan, params: TaintParams, ctx: RunbookContext) -> StepResult:
    return put_on(plan, params.taint(), ctx)


@TAINT.verify
def _verify(plan: Plan, params: TaintParams, ctx: RunbookContext) -> StepResult:
    return carries(plan, params.taint(), ctx)


@TAINT.rollback
def _rollback(plan: Plan, params: TaintParams, ctx: RunbookContext) -> StepResult:
    return take_off(plan, params.taint(), ctx)


class UntaintParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN,
                     description="the gpuops.io/ taint key to remove (every effect)")
    reason: str = Field(default="", max_length=500)


UNTAINT = Runbook[UntaintParams](
    RunbookDefinition(
        name="untaint_node",
        title="Lift one of gpuops' taints",
        description="Remove a gpuops.io/ taint from a node (every effect of that key): the part it kept work away "
                    "from was repaired. A taint someone else put on is never touched.",
        risk=Risk.LOW,
        target_kind=TargetKind.NODE,
        params_model=UntaintParams,
        disruptive=False,
        auto_approvable=True,
        expected_effect="the node no longer carries the taint",
        verify_deadline_s=30,
        has_rollback=False,
    )
)


@UNTAINT.precondition
def _untaint_pre(plan: Plan, params: UntaintParams, ctx: RunbookContext) -> list[str]:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return problems
    return [] if any(t.key == params.key for t in node.taints) else [f"{node.name} has no taint {params.key}"]


@UNTAINT.dry_run
def _untaint_dry(plan: Plan, params: UntaintParams, ctx: RunbookContext) -> Diff:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return Diff(blockers=problems)
    return Diff(changes=[f"remove taint {t.key}={t.value}:{t.effect} from {node.name}"
                         for t in node.taints if t.key == params.key])


@UNTAINT.step
def _untaint(plan: Plan, params: UntaintParams, ctx: RunbookContext) -> StepResult:
    node = ctx.cluster.remove_taint(str(plan.target.node), params.key)
    ok = not any(t.key == params.key for t in node.taints)
    return StepResult(ok, f"removed taint {params.key} from {node.name}" if ok else f"{node.name} keeps {params.key}")


@UNTAINT.verify
def _untaint_verify(plan: Plan, params: UntaintParams, ctx: RunbookContext) -> StepResult:
    node = ctx.cluster.get_node(str(plan.target.node))
    ok = not any(t.key == params.key for t in node.taints)
    return StepResult(ok, f"{node.name} {'no longer carries' if ok else 'still carries'} taint {params.key}")


class PortTaintParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hca: str = Field(pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
                     description="the HCA whose port waits for repair (mlx5_3), the taint's value")
    reason: str = Field(default="", max_length=500)

    def taint(self) -> Taint:
        return Taint(PORT_TAINT, "NoSchedule", self.hca)


TAINT_PORT = Runbook[PortTaintParams](
    RunbookDefinition(
        name="taint_port",
        title="Keep work across nodes off a failing InfiniBand port",
        description=(f"Put the NoSchedule taint {PORT_TAINT}=<HCA> on a node whose port waits for its repair: "
                     "nothing running stops and the node keeps taking work that stays inside it (which tolerates "
                     "the taint), while new work whose ranks span nodes lands elsewhere."),
        risk=Risk.LOW,
        target_kind=TargetKind.NODE,
        params_model=PortTaintParams,
        disruptive=False,
        auto_approvable=True,
        expected_effect=f"the node carries {PORT_TAINT}=<HCA>:NoSchedule",
        verify_deadline_s=30,
        has_rollback=True,
    )
)


@TAINT_PORT.precondition
def _port_pre(plan: Plan, params: PortTaintParams, ctx: RunbookContext) -> list[str]:
    return find_node(ctx, str(plan.target.node))[1]


@TAINT_PORT.dry_run
def _port_dry(plan: Plan, params: PortTaintParams, ctx: RunbookContext) -> Diff:
    node, problems = find_node(ctx, str(plan.target.node))
    if node is None:
        return Diff(blockers=problems)
    if params.taint() in node.taints:
        return Diff(changes=[f"none: {node.name} already has {PORT_TAINT}={params.hca}:NoSchedule"])
    return Diff(changes=[f"taint {node.name} {PORT_TAINT}={params.hca}:NoSchedule (running pods stay; new work "
                         "that spans nodes lands elsewhere)"])


@TAINT_PORT.step
def _add_port_taint(plan: Plan, params: PortTaintParams, ctx: RunbookContext) -> StepResult:
    return put_on(plan, params.taint(), ctx)


@TAINT_PORT.verify
def _port_verify(plan: Plan, params: PortTaintParams, ctx: RunbookContext) -> StepResult:
    return carries(plan, params.taint(), ctx)


@TAINT_PORT.rollback
def _port_rollback(plan: Plan, params: PortTaintParams, ctx: RunbookContext) -> StepResult:
    return take_off(plan, params.taint(), ctx)
