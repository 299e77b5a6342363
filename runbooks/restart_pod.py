"""restart_pod: restart a hung job by deleting its pods; their controller recreates them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from connectors.kubernetes import NotFound, PodInfo
from runbooks.context import RunbookContext
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.pods import free_gpus, is_training_pod, pod_key


class RestartParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)
    whole_job: bool = Field(default=True, description="restart every pod of the same controller, not just this one")
    grace_period_s: int | None = Field(default=None, ge=0, description="termination grace; None = each pod's own")


RESTART = Runbook[RestartParams](
    RunbookDefinition(
        name="restart_pod",
        title="Restart a pod (or its whole job)",
        description=(
            "Delete the pod, or every pod of its controller for a hung multi-pod job; the controller recreates "
            "them. Refuses pods no controller manages, which would not come back, and a restart whose freed GPUs "
            "pods already waiting for a node would take first."
        ),
        risk=Risk.MEDIUM,
        target_kind=TargetKind.POD,
        params_model=RestartParams,
        disruptive=False,
        auto_approvable=False,
        expected_effect="the job's pods were recreated and are Running and Ready again",
        verify_deadline_s=300,
        has_rollback=False,
    )
)


def find_pod(ctx: RunbookContext, plan: Plan) -> tuple[PodInfo | None, list[str]]:
    target = plan.target
    try:
        return ctx.cluster.get_pod(str(target.namespace), str(target.name)), []
    except NotFound:
        return None, [f"pod {target.namespace}/{target.name} does not exist"]


def job_pods(ctx: RunbookContext, pod: PodInfo, whole_job: bool) -> list[PodInfo]:
    """The pod and, for a whole job, every pod with the same controller (found node by node)."""
    if not whole_job or pod.owner_kind is None:
        return [pod]
    found = {
        pod_key(p): p
        for node in ctx.cluster.list_nodes()
        for p in ctx.cluster.list_pods(node.name)
        if p.namespace == pod.namespace and (p.owner_kind, p.owner_name) == (pod.owner_kind, pod.owner_name)
    }
    found.setdefault(pod_key(pod), pod)
    return [found[k] for k in sorted(found)]


@RESTART.risk
def _risk(plan: Plan, params: RestartParams, ctx: RunbookContext) -> Risk:
    pod, _ = find_pod(ctx, plan)
    return Risk.HIGH if pod is not None and is_training_pod(pod, ctx.settings) else Risk.MEDIUM


@RESTART.precondition
def _pre(plan: Plan, params: RestartParams, ctx: RunbookContext) -> list[str]:
    pod, problems = find_pod(ctx, plan)
    if pod is None:
        return problems
    if pod.owner_kind is None:
        return [f"pod {pod_key(pod)} is not managed by a controller; deleting it would not restart it"]
    if pod.is_mirror:
        return [f"pod {pod_key(pod)} is a mirror pod; restart it on its node"]
    pods = job_pods(ctx, pod, params.whole_job)
    waiting = queued_for_its_gpus(ctx, pod, pods)
    if waiting:
        names = ", ".join(pod_key(p) for p in waiting[:3]) + (", …" if len(waiting) > 3 else "")
        return [f"{len(waiting)} pod(s) waiting for a node ({names}) could take the "
                f"{sum(p.gpu_count for p in pods)} GPUs the restart frees before the recreated pods, which join "
                "the back of the scheduler's queue: the job could be left pending"]
    return []


def queued_for_its_gpus(ctx: RunbookContext, pod: PodInfo, pods: list[PodInfo]) -> list[PodInfo]:
    """Other controllers' pods waiting for a node that fit on a node the restart frees GPUs on: deleted pods
    free their GPUs at once, and the scheduler places the pods already queued before the recreated ones."""
    freed: dict[str, int] = {}
    for p in pods:
        if p.node:
            freed[p.node] = freed.get(p.node, 0) + p.gpu_count
    if not any(freed.values()):
        return []
    room = max(free_gpus(ctx, within=freed, leaving={pod_key(p) for p in pods}), default=0)
    return [p for p in ctx.cluster.list_unscheduled_pods()
            if 0 < p.gpu_count <= room and (p.owner_kind, p.owner_name) != (pod.owner_kind, pod.owner_name)]


@RESTART.dry_run
def _dry(plan: Plan, params: RestartParams, ctx: RunbookContext) -> Diff:
    pod, problems = find_pod(ctx, plan)
    if pod is None:
        return Diff(blockers=problems)
    pods = job_pods(ctx, pod, params.whole_job)
    hours = (
        sum(p.gpu_count for p in pods)
        * (
            ctx.settings.restart_overhead_s
            if is_training_pod(pod, ctx.settings)
            else ctx.settings.assumed_checkpoint_interval_s
        )
        / 3600
    )
    return Diff(
        changes=[f"delete {pod_key(p)} (its {p.owner_kind} recreates it)" for p in pods],
        pods_affected=[pod_key(p) for p in pods],
        gpus_affected=sum(p.gpu_count for p in pods),
        gpu_hours_at_risk=round(hours, 3),
    )


@RESTART.step
def delete_pods(plan: Plan, params: RestartParams, ctx: RunbookContext) -> StepResult:
    pod, problems = find_pod(ctx, plan)
    if pod is None:
        return StepResult(False, "; ".join(problems))
    deleted = []
    for victim in job_pods(ctx, pod, params.whole_job):
        try:
            ctx.cluster.delete_pod(victim.namespace, victim.name, grace_period_s=params.grace_period_s)
        except NotFound:
            continue
        deleted.append(pod_key(victim))
    return StepResult(
        True, f"deleted {', '.join(deleted)}", {"deleted": deleted, "owner": f"{pod.owner_kind}/{pod.owner_name}"}
    )


def owner_pods_running(ctx: RunbookContext, plan: Plan, params: RestartParams) -> StepResult:
    """The job's pods are all Running and Ready and none is still terminating.

    While the target pod exists its controller names the job; once it is gone (recreated under a new name)
    the job's pods are those with a controller whose names share the target's generated prefix.
    """
    target = plan.target
    pod, _ = find_pod(ctx, plan)
    prefix = str(target.name).rsplit("-", 1)[0] + "-"
    everywhere = [
        p
        for node in ctx.cluster.list_nodes()
        for p in ctx.cluster.list_pods(node.name)
        if p.namespace == target.namespace
    ]
    if pod is not None:
        pods = [p for p in everywhere if (p.owner_kind, p.owner_name) == (pod.owner_kind, pod.owner_name)] or [pod]
        if not params.whole_job:
            pods = [pod]
    else:
        pods = [p for p in everywhere if p.owner_kind is not None and p.name.startswith(prefix)]
    if not pods:
        return StepResult(False, f"no pod of {target.namespace}/{target.name}'s job is running yet")
    waiting = sorted(pod_key(p) for p in pods if p.terminating or not p.ready)
    if waiting:
        return StepResult(False, f"waiting for {', '.join(waiting)}", {"waiting": waiting})
    return StepResult(
        True, f"{len(pods)} pod(s) of the job Running and Ready", {"pods": sorted(pod_key(p) for p in pods)}
    )


@RESTART.step
def wait_running(plan: Plan, params: RestartParams, ctx: RunbookContext) -> StepResult:
    last: list[StepResult] = []

    def check() -> StepResult | None:
        last.append(owner_pods_running(ctx, plan, params))
        return last[-1] if last[-1].ok else None

    return ctx.poll(RESTART.definition.verify_deadline_s, check) or last[-1]


@RESTART.verify
def _verify(plan: Plan, params: RestartParams, ctx: RunbookContext) -> StepResult:
    return owner_pods_running(ctx, plan, params)
