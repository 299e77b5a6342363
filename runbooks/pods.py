"""Which pods an action moves, and the shared moves: ask training jobs to checkpoint, evict with
PodDisruptionBudget retries until a deadline, wait until the pods are gone. As `kubectl drain` does:
DaemonSet and mirror pods are skipped, unmanaged pods need `force`, emptyDir pods need
`delete_emptydir_data`, already-terminating pods are left to finish."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.kubernetes import DisruptionBlocked, NotFound, PodInfo
from runbooks.context import RunbookContext
from runbooks.model import StepResult
from runbooks.settings import RunbookSettings

PodFilter = Callable[[PodInfo], bool]


class EvacuationParams(BaseModel):
    """How pods are moved off a node or GPU (the flags of `kubectl drain`, plus checkpointing)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500, description="why, written to the node and the audit trail")
    force: bool = Field(default=False, description="also delete pods no controller manages (they do not come back)")
    delete_emptydir_data: bool = Field(default=False, description="also evict pods whose emptyDir data is lost")
    grace_period_s: int | None = Field(default=None, ge=0, description="termination grace; None = each pod's own")
    timeout_s: float | None = Field(
        default=None, gt=0, le=86_400, description="eviction deadline; default from settings"
    )
    checkpoint: bool = Field(default=True, description="ask training-job pods to checkpoint before evicting them")
    checkpoint_deadline_s: float | None = Field(default=None, ge=0, le=86_400)
    on_checkpoint_timeout: Literal["fail", "proceed"] = Field(
        default="fail",
        description="when a job does not confirm its checkpoint in time: stop (node stays cordoned) or evict anyway",
    )


def pod_key(pod: PodInfo) -> str:
    return f"{pod.namespace}/{pod.name}"


def is_training_pod(pod: PodInfo, settings: RunbookSettings) -> bool:
    """A pod of a training job that can checkpoint when asked."""
    return any(marker in pod.annotations for marker in settings.checkpoint_marker_annotations)


@dataclass
class Evacuation:
    """The pods on a node sorted into those to evict, those skipped (and why), and what blocks the move."""

    evict: list[PodInfo] = field(default_factory=list)
    skipped: list[tuple[PodInfo, str]] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)


def sort_pods(pods: Iterable[PodInfo], params: EvacuationParams, wanted: PodFilter | None = None) -> Evacuation:
    """Sort the pods as `kubectl drain` would; `wanted` narrows which pods the action concerns."""
    out = Evacuation()
    for pod in sorted(pods, key=pod_key):
        if wanted is not None and not wanted(pod):
            continue
        if pod.is_mirror:
            out.skipped.append((pod, "mirror pod (managed by the kubelet)"))
        elif pod.is_daemonset:
            out.skipped.append((pod, "DaemonSet pod"))
        elif pod.terminating:
            out.skipped.append((pod, "already terminating"))
        elif pod.phase in ("Succeeded", "Failed"):
            out.evict.append(pod)
        else:
            if pod.owner_kind is None and not params.force:
                out.blockers.append(
                    f"pod {pod_key(pod)} is not managed by a controller and would not come back; "
                    "set force=true to delete it anyway"
                )
                continue
            if pod.uses_empty_dir and not params.delete_emptydir_data:
                out.blockers.append(
                    f"pod {pod_key(pod)} uses emptyDir storage whose data would be lost; "
                    "set delete_emptydir_data=true to evict it anyway"
                )
                continue
            out.evict.append(pod)
    return out


def gpu_hours_at_risk(pods: Iterable[PodInfo], params: EvacuationParams, settings: RunbookSettings) -> float:
    """GPU-hours of work the move may lose: a checkpointed job loses its restart time, any other job the
    work since its last checkpoint (unknown here, so a whole assumed checkpoint interval)."""
    total = 0.0
    for pod in pods:
        if pod.phase in ("Succeeded", "Failed") or not pod.gpu_count:
            continue
        checkpointed = params.checkpoint and is_training_pod(pod, settings)
        seconds = settings.restart_overhead_s if checkpointed else settings.assumed_checkpoint_interval_s
        total += pod.gpu_count * seconds / 3600.0
    return round(total, 3)


def describe_moves(evacuation: Evacuation, params: EvacuationParams, settings: RunbookSettings) -> list[str]:
    """The dry run's lines for these pods."""
    lines: list[str] = []
    deadline = checkpoint_deadline(params, settings)
    for pod in evacuation.evict:
        if params.checkpoint and is_training_pod(pod, settings):
            lines.append(f"ask {pod_key(pod)} to checkpoint (waits up to {deadline:g}s)")
    for pod in evacuation.evict:
        verb = "delete" if pod.owner_kind is None else "evict"
        gpus = f", {pod.gpu_count} GPU{'s' if pod.gpu_count != 1 else ''}" if pod.gpu_count else ""
        lines.append(f"{verb} {pod_key(pod)}{gpus}")
    lines.extend(f"skip {pod_key(pod)} ({why})" for pod, why in evacuation.skipped)
    return lines


def checkpoint_deadline(params: EvacuationParams, settings: RunbookSettings) -> float:
    return params.checkpoint_deadline_s if params.checkpoint_deadline_s is not None else settings.checkpoint_deadline_s


def request_checkpoints(ctx: RunbookContext, pods: list[PodInfo], params: EvacuationParams) -> StepResult:
    """Ask each training pod to checkpoint and wait until all confirm, up to the checkpoint deadline."""
    training = [p for p in pods if params.checkpoint and is_training_pod(p, ctx.settings)]
    if not training:
        return StepResult(True, "no training-job pods to checkpoint", {"checkpointed": []})
    request_id = f"{ctx.request_label()}-{int(ctx.clock())}"
    for pod in training:
        if not pod.checkpoint_done:
            ctx.cluster.request_checkpoint(pod.namespace, pod.name, request_id)
    waiting = {pod_key(p): p for p in training}

    def all_done() -> bool | None:
        for key, pod in list(waiting.items()):
            try:
                if ctx.cluster.get_pod(pod.namespace, pod.name).checkpoint_done:
                    del waiting[key]
            except NotFound:
                del waiting[key]  # gone already: nothing left to checkpoint
        return True if not waiting else None

    deadline = checkpoint_deadline(params, ctx.settings)
    done = ctx.poll(deadline, all_done)
    checked = sorted(pod_key(p) for p in training if pod_key(p) not in waiting)
    data = {"checkpointed": checked, "checkpoint_request": request_id, "checkpoint_missing": sorted(waiting)}
    if done:
        return StepResult(True, f"checkpoint confirmed by {', '.join(checked)}", data)
    missing = ", ".join(sorted(waiting))
    if params.on_checkpoint_timeout == "proceed":
        return StepResult(True, f"no checkpoint from {missing} within {deadline:g}s; evicting anyway", data)
    return StepResult(False, f"no checkpoint from {missing} within {deadline:g}s; nothing was evicted", data)


def evict_pods(ctx: RunbookContext, pods: list[PodInfo], params: EvacuationParams) -> StepResult:
    """Evict (or, for unmanaged pods under `force`, delete) every pod, retrying those a
    PodDisruptionBudget blocks until the deadline. A failure is a result, never an exception."""
    deadline = params.timeout_s or ctx.settings.drain_timeout_s
    grace = params.grace_period_s if params.grace_period_s is not None else ctx.settings.default_grace_period_s
    remaining = {pod_key(p): p for p in pods}
    evicted: list[str] = []
    blocked_seen: set[str] = set()

    def attempt() -> bool | None:
        for key, pod in list(remaining.items()):
            try:
                if pod.owner_kind is None or pod.phase in ("Succeeded", "Failed"):
                    ctx.cluster.delete_pod(pod.namespace, pod.name, grace_period_s=grace)
                else:
                    ctx.cluster.evict_pod(pod.namespace, pod.name, deadline_s=0, grace_period_s=grace)
            except NotFound:
                pass  # already gone
            except DisruptionBlocked:
                blocked_seen.add(key)
                continue
            evicted.append(key)
            del remaining[key]
        return True if not remaining else None

    done = ctx.poll(deadline, attempt, ctx.settings.evict_retry_interval_s)
    data = {"evicted": evicted, "blocked": sorted(remaining), "retried": sorted(blocked_seen)}
    if done:
        retried = f" (retried {len(blocked_seen)} blocked by a PodDisruptionBudget)" if blocked_seen else ""
        return StepResult(True, f"evicted {len(evicted)} pod(s){retried}", data)
    return StepResult(
        False,
        f"{len(remaining)} pod(s) still blocked by a PodDisruptionBudget after {deadline:g}s: "
        f"{', '.join(sorted(remaining))}",
        data,
    )


def wait_gone(ctx: RunbookContext, node: str, keys: set[str], deadline_s: float) -> StepResult:
    """Wait until none of the pods `keys` is on the node any more (graceful terminations take time)."""

    def gone() -> bool | None:
        left = {pod_key(p) for p in ctx.cluster.list_pods(node)} & keys
        return True if not left else None

    if not keys or ctx.poll(deadline_s, gone):
        return StepResult(True, f"{len(keys)} pod(s) gone from {node}")
    left = sorted({pod_key(p) for p in ctx.cluster.list_pods(node)} & keys)
    return StepResult(
        False, f"still terminating on {node} after {deadline_s:g}s: {', '.join(left)}", {"terminating": left}
    )


def evacuate(ctx: RunbookContext, node: str, moves: Evacuation, params: EvacuationParams) -> StepResult:
    """Evict the pods `moves` selected on the node (refusing while anything blocks them) and wait until they are
    gone from it: the eviction step of the runbooks that move only some pods (one GPU's, the GPU pods)."""
    if moves.blockers:
        return StepResult(False, "; ".join(moves.blockers))
    result = evict_pods(ctx, moves.evict, params)
    if not result.ok:
        return result
    gone = wait_gone(ctx, node, {pod_key(p) for p in moves.evict}, params.timeout_s or ctx.settings.drain_timeout_s)
    return StepResult(gone.ok, f"{result.detail}; {gone.detail}", {**result.data, **gone.data})


def free_gpus(ctx: RunbookContext, exclude: str | None = None, *, within: Collection[str] | None = None,
              leaving: Collection[str] = ()) -> list[int]:
    """Free GPUs on each node that takes new pods (ready, not cordoned, without gpuops' own taint; the pods'
    tolerations of other taints are not known here), `exclude` left out and only the nodes `within` when given:
    where a pod created now can run. A pod Running or Pending on a node holds its GPUs there, except the pods
    `leaving` (their keys: an action is about to delete them)."""
    free: list[int] = []
    for node in ctx.cluster.list_nodes():
        if node.name == exclude or (within is not None and node.name not in within) or node.unschedulable \
                or node.ready is not True or any(t.key == ctx.settings.action_taint_key for t in node.taints):
            continue
        used = sum(p.gpu_count for p in ctx.cluster.list_pods(node.name) if not p.terminating
                   and p.phase in ("Running", "Pending") and pod_key(p) not in leaving)
        free.append(max(0, node.gpu_allocatable - used))
    return free


def placed(free: list[int], sizes: Iterable[int]) -> tuple[int, int]:
    """How many of `sizes` (GPUs each, placed largest first, each on the node with the most free GPUs) fit, and
    the most free GPUs any node has left after them."""
    room, fitted = sorted(free, reverse=True), 0
    for size in sorted(sizes, reverse=True):
        room.sort(reverse=True)
        if not room or room[0] < size:
            break
        room[0] -= size
        fitted += 1
    return fitted, max(room, default=0)
