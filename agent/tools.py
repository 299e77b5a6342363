"""Investigation tools. Each returns a typed result (ok, error or no data), never raises, and is bounded:
the graph runs them in its investigate loop and the LLM planner may ask for them by name."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from agent.fencing import bounded, fence
from connectors.kubernetes.models import PodInfo
from domain.jobs import job_of

if TYPE_CHECKING:
    from agent.context import AgentContext

log = logging.getLogger(__name__)

Status = Literal["ok", "error", "no_data"]


@dataclass(frozen=True)
class ToolResult:
    tool: str
    status: Status
    summary: str
    data: Any = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return {"tool": self.tool, "status": self.status, "summary": self.summary, "data": bounded(self.data)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolResult:
        status: Status = data["status"]
        return cls(str(data["tool"]), status, str(data["summary"]), data.get("data"))

    def fenced(self, max_chars: int) -> str:
        return fence(self.tool, self.status, self.summary, self.data, max_chars=max_chars)


ToolFn = Callable[["AgentContext", dict[str, Any], dict[str, Any]], ToolResult]


def _node_conditions(ctx: AgentContext, incident: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    host = incident.get("hostname")
    if ctx.cluster is None:
        return ToolResult("node_conditions", "error", "no cluster connection is configured")
    if not host:
        return ToolResult("node_conditions", "no_data", "the incident names no node")
    node = ctx.cluster.get_node(host)
    conditions = [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                  for c in node.conditions]
    not_ok = [c["type"] for c in conditions if (c["type"] == "Ready") != (c["status"] == "True")]
    data = {"node": host, "unschedulable": node.unschedulable, "cordoned_by_gpuops": node.cordoned_by_gpuops,
            "taints": [f"{t.key}={t.value}:{t.effect}" for t in node.taints], "conditions": conditions,
            "gpu_capacity": node.gpu_capacity, "gpu_allocatable": node.gpu_allocatable,
            "labels": dict(node.labels), "annotations": dict(node.annotations)}
    summary = (f"{host}: {'cordoned' if node.unschedulable else 'schedulable'}; "
               f"{'conditions not healthy: ' + ', '.join(not_ok) if not_ok else 'conditions healthy'}; "
               f"{node.gpu_allocatable}/{node.gpu_capacity} GPUs allocatable")
    return ToolResult("node_conditions", "ok", summary, data)


def pod_summary(pod: PodInfo) -> dict[str, Any]:
    return {"namespace": pod.namespace, "name": pod.name, "phase": pod.phase, "gpus": list(pod.gpu_indices),
            "gpu_count": max(pod.gpu_count, len(pod.gpu_indices)),
            "owner": f"{pod.owner_kind}/{pod.owner_name}" if pod.owner_kind else None,
            "labels": dict(pod.labels), "annotations": dict(pod.annotations)}


def _pods_on_node(ctx: AgentContext, incident: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    host = incident.get("hostname")
    if ctx.cluster is None:
        return ToolResult("pods_on_node", "error", "no cluster connection is configured")
    if not host:
        return ToolResult("pods_on_node", "no_data", "the incident names no node")
    # the pods holding GPUs first: evidence keeps a list's first records (agent.fencing.MAX_ITEMS), and a node's
    # DaemonSets alone may outnumber them
    pods = sorted((pod_summary(p) for p in ctx.cluster.list_pods(host)), key=lambda p: not p["gpu_count"])
    if not pods:
        return ToolResult("pods_on_node", "no_data", f"no pods on {host}", [])
    gpu = incident.get("gpu")
    on_gpu = [p for p in pods if gpu is not None and gpu in p["gpus"]]
    summary = f"{len(pods)} pod(s) on {host}" + (f", {len(on_gpu)} on GPU {gpu}" if gpu is not None else "")
    return ToolResult("pods_on_node", "ok", summary, pods)


MAX_JOB_PODS = 256


def incident_job(incident: dict[str, Any]) -> str | None:
    """The job an incident concerns: a job-level incident's own, or the job of the GPU beside a fabric incident's
    port (whether its ranks cross nodes decides whether the port matters to it)."""
    job = (incident.get("details") or {}).get("job")
    if not job and incident.get("family") == "fabric":
        job = (incident.get("evidence") or {}).get("job")
    return job if isinstance(job, str) and job else None


def _job_pods(ctx: AgentContext, incident: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    """The running pods of the job a job-level incident concerns, on whatever node they run now: a job that
    restarted or moved since its incident opened is still the job to act on."""
    job = incident_job(incident)
    if ctx.cluster is None:
        return ToolResult("job_pods", "error", "no cluster connection is configured")
    if job is None or "/" not in job:
        return ToolResult("job_pods", "no_data", "the incident names no job")
    pods = []
    for node in ctx.cluster.list_nodes():
        pods += [pod_summary(p) | {"node": node.name} for p in ctx.cluster.list_pods(node.name)
                 if job_of(p.name, p.namespace) == job and p.phase in ("Running", "Pending", "")]
        if len(pods) >= MAX_JOB_PODS:
            break
    if not pods:
        return ToolResult("job_pods", "no_data", f"no running pod of {job} in the cluster", [])
    nodes = sorted({p["node"] for p in pods})
    return ToolResult("job_pods", "ok", f"{len(pods)} pod(s) of {job} on {', '.join(nodes[:8])}", pods)


def _deployment_scale(ctx: AgentContext, incident: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    deployment = (incident.get("details") or {}).get("deployment")
    if ctx.cluster is None:
        return ToolResult("deployment_scale", "error", "no cluster connection is configured")
    if not isinstance(deployment, str) or deployment.count("/") != 1:
        return ToolResult("deployment_scale", "no_data", "the incident names no deployment")
    namespace, name = deployment.split("/")
    scale = ctx.cluster.get_scale(namespace, name)
    return ToolResult("deployment_scale", "ok", f"{deployment}: {scale.replicas} replicas wanted, {scale.current} "
                      "running", {"deployment": deployment, "replicas": scale.replicas, "current": scale.current})


def _stats(values: np.ndarray[Any, Any]) -> dict[str, float] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    return {"last": float(finite[-1]), "min": float(finite.min()), "max": float(finite.max()),
            "mean": float(finite.mean())}


def _gpu_metrics(ctx: AgentContext, incident: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    host, gpu = incident.get("hostname"), incident.get("gpu")
    if ctx.telemetry is None:
        return ToolResult("gpu_metrics", "error", "no telemetry source is configured")
    if not host:
        return ToolResult("gpu_metrics", "no_data", "the incident names no node")
    end = float(incident["opened_ts"])
    frame = ctx.telemetry.frame(end - ctx.limits.metrics_window_s, end, ctx.limits.metrics_step_s)
    rows = [i for i in range(frame.n_gpus) if frame.gpus.hostname[i] == host]
    mine = [i for i in rows if gpu is None or frame.gpus.gpu[i] == gpu]
    if not mine:
        return ToolResult("gpu_metrics", "no_data", f"no telemetry for {host} in the window")
    per_gpu: dict[str, dict[str, dict[str, float]]] = {}
    for row in mine:
        stats = {name: s for name, arr in sorted(frame.metrics.items()) if (s := _stats(arr[row])) is not None}
        per_gpu[str(frame.gpus.gpu[row])] = stats
    peers = [i for i in rows if i not in mine]
    peer_median: dict[str, float] = {}
    for name, arr in sorted(frame.metrics.items()):
        lasts = [s["last"] for i in peers if (s := _stats(arr[i])) is not None]
        if lasts:
            peer_median[name] = float(np.median(lasts))
    data = {"window_s": ctx.limits.metrics_window_s, "gpus": per_gpu, "node_peers_median_last": peer_median}
    hot = {name: v["max"] for g in per_gpu.values() for name, v in g.items()
           if name == "DCGM_FI_DEV_GPU_TEMP" and not math.isnan(v["max"])}
    summary = f"{len(per_gpu)} GPU(s) on {host} over {ctx.limits.metrics_window_s:g}s" + (
        f"; max temperature {max(hot.values()):.0f}" if hot else "")
    return ToolResult("gpu_metrics", "ok", summary, data)


def _incident_history(ctx: AgentContext, incident: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    host = incident.get("hostname")
    if not host:
        return ToolResult("incident_history", "no_data", "the incident names no node")
    since = datetime.fromisoformat(incident["opened_at"]) - timedelta(days=ctx.limits.history_days)
    past = [p.to_json() for p in ctx.evidence.incidents_on_node(host, since=since, excluding=int(incident["id"]))]
    if not past:
        return ToolResult("incident_history", "no_data",
                          f"no other incident on {host} in {ctx.limits.history_days:g} days", [])
    same_gpu = [p for p in past if incident.get("gpu") is not None and p["gpu"] == incident.get("gpu")]
    return ToolResult("incident_history", "ok",
                      f"{len(past)} other incident(s) on {host} in {ctx.limits.history_days:g} days, "
                      f"{len(same_gpu)} on the same GPU", past)


def _xid_catalogue(ctx: AgentContext, incident: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    code = args.get("code", incident.get("xid"))
    if ctx.xid is None:
        return ToolResult("xid_catalogue", "error", "no XID catalogue is configured")
    if code is None or not str(code).isdigit():
        return ToolResult("xid_catalogue", "no_data", "the incident carries no XID code")
    entry = ctx.xid.describe(int(code))
    if entry is None:
        return ToolResult("xid_catalogue", "no_data", f"XID {code} is not in the catalogue")
    return ToolResult("xid_catalogue", "ok", f"XID {code}: {entry.get('name', '?')}", dict(entry))


def _runbook_catalogue(ctx: AgentContext, incident: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    specs = ctx.runbooks.specs()
    data = [{"name": s.name, "title": s.title, "risk": s.risk, "target_kind": s.target_kind,
             "disruptive": s.disruptive, "description": s.description} for s in specs]
    return ToolResult("runbook_catalogue", "ok", f"{len(specs)} runbooks", data)


TOOLS: dict[str, tuple[ToolFn, str]] = {
    "node_conditions": (_node_conditions, "The incident node's conditions, taints and cordon state."),
    "pods_on_node": (_pods_on_node, "Pods on the incident's node, with the GPUs each holds."),
    "deployment_scale": (_deployment_scale, "Replicas of the deployment an overload incident names."),
    "job_pods": (_job_pods, "The running pods of the job a job-level incident concerns, wherever they run."),
    "gpu_metrics": (_gpu_metrics, "DCGM metrics of the incident's GPU(s) before it opened, against node peers."),
    "incident_history": (_incident_history, "Earlier incidents on the same node and GPU, with their actions."),
    "xid_catalogue": (_xid_catalogue, "What an XID code means and NVIDIA's recommended action (arg: code)."),
    "runbook_catalogue": (_runbook_catalogue, "The runbooks gpuops can run, with risk and target kind."),
}


def run_tool(ctx: AgentContext, incident: dict[str, Any], name: str, args: dict[str, Any] | None = None) -> ToolResult:
    """Run one tool by name. An unknown tool or a failing port is an `error` result, not an exception."""
    entry = TOOLS.get(name)
    if entry is None:
        return ToolResult(name[:64], "error", f"no tool named {name[:64]!r}; tools: {', '.join(TOOLS)}")
    try:
        return entry[0](ctx, incident, args or {})
    except Exception as exc:  # a port that fails is evidence too; the graph goes on without it
        log.warning("tool %s failed: %s", name, exc)
        return ToolResult(name, "error", f"{type(exc).__name__}: {str(exc)[:200]}")


def agenda_for(incident: dict[str, Any]) -> list[str]:
    """The tools the investigate loop runs for an incident, most telling first."""
    agenda = ["node_conditions", "pods_on_node", "gpu_metrics", "incident_history"]
    if incident.get("xid") is not None:
        agenda.insert(0, "xid_catalogue")
    if (incident.get("details") or {}).get("deployment"):
        agenda.insert(0, "deployment_scale")
    if incident_job(incident):
        agenda.insert(2, "job_pods")
    return agenda
