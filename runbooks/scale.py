"""scale_deployment: set a Deployment's replicas, only within the bounds configured for it, or (for gpuops'
autoscaler) within the bounds the Deployment's owner wrote on it when opting in. Before a scale-down, the pods
serving requests carry `controller.kubernetes.io/pod-deletion-cost` (the requests they run), so the ReplicaSet
removes idle replicas first instead of cutting a user's request off."""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.kubernetes import (
    DELETION_COST_ANNOTATION,
    SPARED_ANNOTATION,
    ClusterError,
    DeploymentScale,
    NotFound,
    ScalingTargets,
)
from runbooks.context import RunbookContext
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.pods import free_gpus, placed
from runbooks.settings import RunbookSettings

MIN_REPLICAS_ANNOTATION = "gpuops.io/min-replicas"
MAX_REPLICAS_ANNOTATION = "gpuops.io/max-replicas"


class OwnerBounds(BaseModel):
    """The bounds a Deployment opted in to autoscaling carries (`gpuops.io/min-replicas`, `max-replicas`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(ge=0, le=10_000)
    max_replicas: int = Field(ge=0, le=10_000)

    @model_validator(mode="after")
    def _ordered(self) -> OwnerBounds:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        return self


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=10_000, description="the wanted replica count, within the configured bounds")
    reason: str = Field(default="", max_length=500)
    autoscaled: OwnerBounds | None = Field(
        default=None, description="set by gpuops' autoscaler: the bounds on the Deployment, checked against it "
                                  "before the change (the configured bounds then apply only where configured)")
    busy_pods: dict[str, int] = Field(
        default_factory=dict, max_length=10_000,
        description="pods serving requests when the change was decided (pod -> requests running): a scale-down "
                    "marks them with a pod-deletion-cost so that idle replicas go first")

    @model_validator(mode="after")
    def _counts(self) -> ScaleParams:
        bad = sorted(pod for pod, running in self.busy_pods.items() if running < 1 or not 0 < len(pod) <= 253)
        if bad:
            raise ValueError(f"busy_pods: {bad[0]!r} needs a pod name and a count of requests >= 1")
        return self


def owner_bounds(annotations: Mapping[str, str], default_max: int) -> OwnerBounds:
    """The bounds written on a Deployment; ValueError naming the annotation when one is not a count."""
    values = {}
    for field, key, default in (("min_replicas", MIN_REPLICAS_ANNOTATION, 0),
                                ("max_replicas", MAX_REPLICAS_ANNOTATION, default_max)):
        text = annotations.get(key)
        try:
            values[field] = default if text is None else int(text)
        except ValueError:
            raise ValueError(f"annotation {key}={text!r} is not a whole number of replicas") from None
    try:
        return OwnerBounds(**values)
    except ValueError as exc:
        raise ValueError(f"annotations {MIN_REPLICAS_ANNOTATION}/{MAX_REPLICAS_ANNOTATION}: {exc}") from None


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
    key = f"{target.namespace}/{target.name}"
    if params.autoscaled is not None:
        owner = params.autoscaled
        problems = [] if owner.min_replicas <= params.replicas <= owner.max_replicas else [
            f"replicas {params.replicas} is outside the bounds on {key} ({owner.min_replicas}..{owner.max_replicas})"]
        if key not in settings.replica_bounds:
            return problems
    bounds = settings.bounds_for(str(target.namespace), str(target.name))
    if bounds is None:  # no bounds configured: never to zero here (the growth bound needs the current count)
        return [] if params.replicas >= 1 else [
            f"replicas {params.replicas}: {key} has no configured bounds, so it keeps at least 1 replica"]
    if not bounds.min_replicas <= params.replicas <= bounds.max_replicas:
        return [
            f"replicas {params.replicas} is outside the bounds for {target.namespace}/{target.name} "
            f"({bounds.min_replicas}..{bounds.max_replicas})"
        ]
    return []


def _growth(plan: Plan, params: ScaleParams, current: int, settings: RunbookSettings) -> list[str]:
    """A deployment without configured bounds grows by at most `max_scale_factor` in one action, whatever its
    size: a fixed ceiling would refuse every change to a large deployment and allow a small one a hundredfold."""
    target = plan.target
    if params.autoscaled is not None or settings.bounds_for(str(target.namespace), str(target.name)) is not None:
        return []
    most = max(1, math.floor(settings.max_scale_factor * max(current, 1)))
    if params.replicas <= max(most, current):
        return []
    return [f"replicas {params.replicas} is more than {settings.max_scale_factor:g}x the {current} "
            f"{target.namespace}/{target.name} wants now (at most {most} in one action; configure bounds for it to "
            f"allow more)"]


@SCALE.risk
def _risk(plan: Plan, params: ScaleParams, ctx: RunbookContext) -> Risk:
    scale, _ = read_scale(ctx, plan)
    if scale is not None and params.replicas < scale.replicas and params.autoscaled is None:
        return Risk.MEDIUM  # taking capacity away from a service (its owner delegated the count to the autoscaler)
    return Risk.LOW


@SCALE.precondition
def _pre(plan: Plan, params: ScaleParams, ctx: RunbookContext) -> list[str]:
    scale, problems = read_scale(ctx, plan)
    if problems or scale is None:
        return problems
    if params.autoscaled is None:
        more = params.replicas - scale.replicas
        return _growth(plan, params, scale.replicas, ctx.settings) or _no_room(plan, more, ctx)
    return _owner_still_agrees(plan, params.autoscaled, ctx)


def _no_room(plan: Plan, more: int, ctx: RunbookContext) -> list[str]:
    """An incident's scale-out is its remedy only if the new replicas can run: on a full fleet they stay pending
    and the overload goes on, so it is refused naming the room there is (a human adds capacity, or a cluster
    autoscaler does, which an incident cannot wait for). gpuops' autoscaler is not held to this: it plans again
    every cycle within its GPU budget, and a pending replica there is what asks a cluster autoscaler for a node."""
    if more <= 0 or not isinstance(ctx.cluster, ScalingTargets):
        return []
    key = f"{plan.target.namespace}/{plan.target.name}"
    try:
        gpus = ctx.cluster.get_served_deployment(str(plan.target.namespace), str(plan.target.name)).gpus_per_replica
    except ClusterError as exc:
        return [f"could not read {key}: {exc}"]
    if gpus <= 0:
        return []
    fitted, most = placed(free_gpus(ctx), [gpus] * more)
    if fitted < more:
        return [f"no room for {more} more replica(s) of {key} ({gpus} GPUs each): {fitted} would fit, then the "
                f"most free GPUs on a node that takes new pods is {most}; they would stay pending"]
    return []


def _owner_still_agrees(plan: Plan, stated: OwnerBounds, ctx: RunbookContext) -> list[str]:
    """An autoscaler plan holds only while the Deployment carries the bounds it states (no plan can invent them)."""
    target = plan.target
    key = f"{target.namespace}/{target.name}"
    if not isinstance(ctx.cluster, ScalingTargets):
        return [f"this cluster connection cannot read {key}'s autoscaling annotations"]
    try:
        deployment = ctx.cluster.get_served_deployment(str(target.namespace), str(target.name))
        found = owner_bounds(deployment.annotations, default_max=-1)
    except ClusterError as exc:
        return [f"could not read {key}: {exc}"]
    except ValueError as exc:
        return [f"{key}: {exc}"]
    if (MAX_REPLICAS_ANNOTATION not in deployment.annotations or found != stated):
        return [f"{key} no longer carries the bounds this plan states ({stated.min_replicas}..{stated.max_replicas}"
                f"); it has {deployment.annotations.get(MIN_REPLICAS_ANNOTATION)}.."
                f"{deployment.annotations.get(MAX_REPLICAS_ANNOTATION)}"]
    return []


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
    marked, note = _mark_busy(plan, params, ctx) if params.replicas < before.replicas else ({}, "")
    after = ctx.cluster.set_scale(str(target.namespace), str(target.name), params.replicas)
    return StepResult(
        after.replicas == params.replicas,
        f"{target.namespace}/{target.name} wants {after.replicas} replicas (was {before.replicas}){note}",
        {"previous_replicas": before.replicas, "replicas": after.replicas, "deletion_costs": marked},
    )


def _mark_busy(plan: Plan, params: ScaleParams, ctx: RunbookContext) -> tuple[dict[str, str | None], str]:
    """Set each replica pod's pod-deletion-cost to the requests it runs (an idle pod's cost that gpuops set before
    removed), only where it changes; what was set, and a note. A cost someone else set (no `gpuops.io/spared`) is
    theirs and left alone. A pod that cannot be marked leaves Kubernetes its own choice: the scale-down still
    happens."""
    namespace, name = str(plan.target.namespace), str(plan.target.name)
    if not isinstance(ctx.cluster, ScalingTargets):
        return {}, ""
    marked: dict[str, str | None] = {}
    try:
        deployment = ctx.cluster.get_served_deployment(namespace, name)
        for pod in ctx.cluster.list_replica_starts(namespace, deployment.selector):
            if pod.deletion_cost is not None and not pod.spared:
                continue
            running = params.busy_pods.get(pod.name)
            want = None if running is None else str(running)
            if pod.deletion_cost != want:
                ctx.cluster.annotate_pod(namespace, pod.name, {DELETION_COST_ANNOTATION: want,
                                                               SPARED_ANNOTATION: None if want is None else "true"})
                marked[pod.name] = want
    except ClusterError as exc:
        return marked, f"; busy replicas not all marked ({exc}): Kubernetes picks the pods to remove"
    busy = sorted(p for p, v in marked.items() if v is not None)
    return marked, f"; spared first: {', '.join(busy)} (serving)" if busy else ""


@SCALE.verify
def _verify(plan: Plan, params: ScaleParams, ctx: RunbookContext) -> StepResult:
    """The replicas exist; for an incident's scale, they are also ready (serving), which is the remedy. gpuops'
    autoscaler checks only that they exist: it plans again every cycle, and a replica loading its model or
    waiting for a node is its own business there."""
    scale, problems = read_scale(ctx, plan)
    if scale is None:
        return StepResult(False, "; ".join(problems))
    ok = scale.replicas == params.replicas and scale.current == params.replicas
    data: dict[str, int] = {"current": scale.current, "wanted": scale.replicas}
    detail = f"{scale.namespace}/{scale.name}: {scale.current} of {scale.replicas} wanted replicas exist"
    if params.autoscaled is None and isinstance(ctx.cluster, ScalingTargets):
        try:
            ready = ctx.cluster.get_served_deployment(scale.namespace, scale.name).ready_replicas
        except ClusterError as exc:
            return StepResult(False, f"could not read {scale.namespace}/{scale.name}'s ready replicas: {exc}", data)
        ok = ok and ready >= params.replicas
        data["ready"] = ready
        detail += f", {ready} ready"
    return StepResult(ok, detail, data)
