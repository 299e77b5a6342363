"""Invariant 1's scope check: an action's targets must lie within its incident."""

from __future__ import annotations

from collections.abc import Mapping

from domain import InvalidTarget, Target, TargetKind
from domain.jobs import job_of
from gpuops.store.models import Incident


def scope_violations(incident: Incident, target_keys: list[str],
                     pod_nodes: Mapping[str, str | None] | None = None) -> list[str]:
    """Reasons why targets fall outside the incident (empty when all are inside).

    Target keys: `node/N`, `gpu/N/i`, `pod/NS/NAME`, `deployment/NS/NAME`. A pod is inside when it runs on
    the incident's node (`pod_nodes` maps pod keys to their node), or when it is a pod of the job a job-level
    incident concerns, wherever it runs (a hung job is restarted as a whole); a deployment when the incident
    names it.
    A fleet incident admits no cluster target at all, and a key that names no target is inside nothing.
    """
    problems: list[str] = []
    pod_nodes = pod_nodes or {}
    for key in target_keys:
        try:
            target = Target.parse(key)
        except InvalidTarget as exc:
            problems.append(f"{key}: {exc}")
            continue
        if incident.scope == "fleet" and target.kind is not TargetKind.NONE:
            problems.append(f"{key}: fleet-wide incident {incident.id} admits no per-node action; a human decides")
            continue
        match target.kind:
            case TargetKind.NODE | TargetKind.GPU if target.node != incident.hostname:
                problems.append(f"{key}: incident {incident.id} is on {incident.hostname}")
            case TargetKind.GPU if incident.scope == "gpu" and incident.gpu is not None and target.gpu != incident.gpu:
                problems.append(f"{key}: incident {incident.id} concerns GPU {incident.gpu} only")
            case TargetKind.POD if pod_nodes.get(key) != incident.hostname and not _of_incident_job(
                    incident, target, pod_nodes.get(key)):
                problems.append(f"{key}: the pod runs on {pod_nodes.get(key) or 'no known node'}, "
                                f"not {incident.hostname}")
            case TargetKind.DEPLOYMENT if incident.details.get("deployment") != f"{target.namespace}/{target.name}":
                problems.append(f"{key}: incident {incident.id} does not concern this deployment")
    return problems


def _of_incident_job(incident: Incident, target: Target, node: str | None) -> bool:
    """Whether the pod exists (it runs on a node) and belongs to the job the incident is about."""
    job = (incident.details or {}).get("job")
    return bool(node and job and target.name and job_of(target.name, target.namespace or "") == job)
