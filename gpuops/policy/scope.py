"""Invariant 1's scope check: an action's targets must lie within its incident."""

from __future__ import annotations

from collections.abc import Mapping

from gpuops.store.models import Incident


def scope_violations(incident: Incident, target_keys: list[str],
                     pod_nodes: Mapping[str, str | None] | None = None) -> list[str]:
    """Reasons why targets fall outside the incident (empty when all are inside).

    Target keys: `node/N`, `gpu/N/i`, `pod/NS/NAME`, `deployment/NS/NAME`. A pod is inside when it runs on
    the incident's node (`pod_nodes` maps pod keys to their node); a deployment when the incident names it.
    A fleet incident admits no cluster target at all.
    """
    problems: list[str] = []
    pod_nodes = pod_nodes or {}
    for key in target_keys:
        kind, _, rest = key.partition("/")
        if incident.scope == "fleet" and kind != "none":
            problems.append(f"{key}: fleet-wide incident {incident.id} admits no per-node action; a human decides")
            continue
        if kind == "node":
            if rest != incident.hostname:
                problems.append(f"{key}: incident {incident.id} is on {incident.hostname}")
        elif kind == "gpu":
            node, _, gpu = rest.rpartition("/")
            if node != incident.hostname:
                problems.append(f"{key}: incident {incident.id} is on {incident.hostname}")
            elif incident.scope == "gpu" and incident.gpu is not None and gpu != str(incident.gpu):
                problems.append(f"{key}: incident {incident.id} concerns GPU {incident.gpu} only")
        elif kind == "pod":
            pod_node = pod_nodes.get(key)
            if pod_node != incident.hostname:
                problems.append(f"{key}: the pod runs on {pod_node or 'no known node'}, not {incident.hostname}")
        elif kind == "deployment":
            if incident.details.get("deployment") != rest:
                problems.append(f"{key}: incident {incident.id} does not concern this deployment")
        elif kind != "none":
            problems.append(f"{key}: unknown target kind {kind!r}")
    return problems
