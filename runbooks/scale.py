"""scale_deployment: set a Deployment's replicas, only within the bounds configured for it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from connectors.kubernetes import DeploymentScale, NotFound
from runbooks.context import RunbookContext
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.settings import RunbookSettings


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=10_000, description="the wanted replica count, within the configured bounds")
    reason: str = Field(default="", max_length=500)


SCALE = Runbook[ScaleParams](
    RunbookDefinition(
        name="scale_deployment",
        title="Scale a deployment",
        description="Set a Deployment's replica count (e.g. more inference replicas under overload), within bounds.",
        risk=Risk.LOW,
        target_kind=TargetKind.DEPLOYMENT,
        params_model=ScaleParams,
        disruptive=False,
        auto_approvable=True,
        expected_effect="the Deployment runs the wanted number of replicas",
        verify_deadline_s=300,
        has_rollback=False,
    )
)


def read_scale(ctx: RunbookContext, plan: Plan) -> tuple[DeploymentScale | None, list[str]]:
    target = plan.target
    try:
        return ctx.cluster.get_scale(str(target.namespace), str(target.name)), []
    except NotFound:
        return None, [f"deployment {target.namespace}/{target.name} does not exist"]


@SCALE.plan_check
def _bounds(plan: Plan, params: ScaleParams, settings: RunbookSettings) -> list[str]:
    target = plan.target
    bounds = settings.bounds_for(str(target.namespace), str(target.name))
    if not bounds.min_replicas <= params.replicas <= bounds.max_replicas:
        return [
            f"replicas {params.replicas} is outside the bounds for {target.namespace}/{target.name} "
            f"({bounds.min_replicas}..{bounds.max_replicas})"
        ]
    return []


@SCALE.risk
def _risk(plan: Plan, params: ScaleParams, ctx: RunbookContext) -> Risk:
    scale, _ = read_scale(ctx, plan)
    if scale is not None and params.replicas < scale.replicas:
        return Risk.MEDIUM  # taking capacity away from a service
    return Risk.LOW


@SCALE.precondition
def _pre(plan: Plan, params: ScaleParams, ctx: RunbookContext) -> list[str]:
    return read_scale(ctx, plan)[1]


@SCALE.dry_run
def _dry(plan: Plan, params: ScaleParams, ctx: RunbookContext) -> Diff:
    scale, problems = read_scale(ctx, plan)
    if scale is None:
        return Diff(blockers=problems)
    if scale.replicas == params.replicas:
        return Diff(changes=[f"none: {scale.namespace}/{scale.name} already wants {params.replicas} replicas"])
    return Diff(changes=[f"scale {scale.namespace}/{scale.name} from {scale.replicas} to {params.replicas} replicas"])


@SCALE.step
def set_replicas(plan: Plan, params: ScaleParams, ctx: RunbookContext) -> StepResult:
    target = plan.target
    before = ctx.cluster.get_scale(str(target.namespace), str(target.name))
    after = ctx.cluster.set_scale(str(target.namespace), str(target.name), params.replicas)
    return StepResult(
        after.replicas == params.replicas,
        f"{target.namespace}/{target.name} wants {after.replicas} replicas (was {before.replicas})",
        {"previous_replicas": before.replicas, "replicas": after.replicas},
    )


@SCALE.verify
def _verify(plan: Plan, params: ScaleParams, ctx: RunbookContext) -> StepResult:
    scale, problems = read_scale(ctx, plan)
    if scale is None:
        return StepResult(False, "; ".join(problems))
    ok = scale.replicas == params.replicas and scale.current == params.replicas
    return StepResult(
        ok,
        f"{scale.namespace}/{scale.name}: {scale.current} of {scale.replicas} wanted replicas exist",
        {"current": scale.current, "wanted": scale.replicas},
    )
