"""Server-side printing: the meta.k8s.io/v1 Table kubectl asks for when it lists or gets objects."""

from __future__ import annotations

from typing import Any

from simulator.kube.objects import parse_rfc3339

Column = tuple[str, str, str]  # name, type, description


def wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


def human_duration(seconds: float) -> str:
    """An age the way kubectl prints it: 45s, 12m, 5h, 3d."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _age(obj: dict[str, Any], now: float) -> str:
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    return human_duration(now - parse_rfc3339(stamp)) if stamp else "<unknown>"


def _node_status(node: dict[str, Any]) -> str:
    ready = next(
        (c for c in node.get("status", {}).get("conditions") or [] if c.get("type") == "Ready"), None
    )
    status = (
        "Unknown"
        if ready is None or ready.get("status") == "Unknown"
        else ("Ready" if ready.get("status") == "True" else "NotReady")
    )
    if node.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    return status


def _pod_status(pod: dict[str, Any]) -> str:
    if "deletionTimestamp" in pod.get("metadata", {}):
        return "Terminating"
    status = pod.get("status", {})
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state", {})
        if "waiting" in state:
            return str(state["waiting"].get("reason", "Waiting"))
        if "terminated" in state:
            return str(state["terminated"].get("reason", "Terminated"))
    return str(status.get("reason") or status.get("phase", "Unknown"))


def _columns_and_cells(kind: str, obj: dict[str, Any], now: float) -> tuple[list[Column], list[Any]]:
    md, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    name = md.get("name", "")
    if kind == "Node":
        roles = (
            ",".join(
                sorted(
                    k.split("/", 1)[1]
                    for k in md.get("labels", {})
                    if k.startswith("node-role.kubernetes.io/")
                )
            )
            or "<none>"
        )
        return (
            [
                ("Name", "string", "Name"),
                ("Status", "string", "Node status"),
                ("Roles", "string", "Roles"),
                ("Age", "string", "Age"),
                ("Version", "string", "Kubelet version"),
            ],
            [
                name,
                _node_status(obj),
                roles,
                _age(obj, now),
                status.get("nodeInfo", {}).get("kubeletVersion", ""),
            ],
        )
    if kind == "Pod":
        containers = status.get("containerStatuses") or []
        ready = sum(1 for c in containers if c.get("ready"))
        restarts = sum(int(c.get("restartCount", 0)) for c in containers)
        return (
            [
                ("Name", "string", "Name"),
                ("Ready", "string", "Ready containers"),
                ("Status", "string", "Status"),
                ("Restarts", "string", "Restarts"),
                ("Age", "string", "Age"),
                ("IP", "string", "Pod IP"),
                ("Node", "string", "Node"),
            ],
            [
                name,
                f"{ready}/{len(spec.get('containers') or containers)}",
                _pod_status(obj),
                str(restarts),
                _age(obj, now),
                status.get("podIP", "<none>"),
                spec.get("nodeName", "<none>"),
            ],
        )
    if kind == "Deployment":
        return (
            [
                ("Name", "string", "Name"),
                ("Ready", "string", "Ready"),
                ("Up-to-date", "integer", "Updated"),
                ("Available", "integer", "Available"),
                ("Age", "string", "Age"),
            ],
            [
                name,
                f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
                status.get("updatedReplicas", 0),
                status.get("availableReplicas", 0),
                _age(obj, now),
            ],
        )
    if kind == "PodDisruptionBudget":
        return (
            [
                ("Name", "string", "Name"),
                ("Min Available", "string", "minAvailable"),
                ("Max Unavailable", "string", "maxUnavailable"),
                ("Allowed Disruptions", "integer", "Allowed disruptions"),
                ("Age", "string", "Age"),
            ],
            [
                name,
                str(spec.get("minAvailable", "N/A")),
                str(spec.get("maxUnavailable", "N/A")),
                status.get("disruptionsAllowed", 0),
                _age(obj, now),
            ],
        )
    if kind == "NodeValidation":
        passed = status.get("passed")
        verdict = "" if passed is None else ("Passed" if passed else "Failed")
        columns: list[Column] = [("Name", "string", "Name"), ("Node", "string", "Node"),
                                 ("Phase", "string", "Phase"), ("Verdict", "string", "Diagnostic verdict"),
                                 ("Age", "string", "Age")]
        return columns, [name, spec.get("nodeName", ""), status.get("phase", ""), verdict, _age(obj, now)]
    if kind in ("GPUReset", "GPUFence", "NodeReboot"):
        gpu = [str(spec.get("gpu", ""))] if kind != "NodeReboot" else []
        cols: list[Column] = [("Name", "string", "Name"), ("Node", "string", "Node")]
        if kind != "NodeReboot":
            cols.append(("GPU", "string", "GPU index"))
        cols += [("Phase", "string", "Phase"), ("Age", "string", "Age")]
        return cols, [name, spec.get("nodeName", ""), *gpu, status.get("phase", ""), _age(obj, now)]
    if kind == "Event":
        involved = obj.get("involvedObject", {})
        return (
            [
                ("Type", "string", "Type"),
                ("Reason", "string", "Reason"),
                ("Object", "string", "Object"),
                ("Message", "string", "Message"),
            ],
            [
                obj.get("type", ""),
                obj.get("reason", ""),
                f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
                obj.get("message", ""),
            ],
        )
    if kind == "DaemonSet":
        return (
            [
                ("Name", "string", "Name"),
                ("Desired", "integer", "Desired"),
                ("Ready", "integer", "Ready"),
                ("Age", "string", "Age"),
            ],
            [name, status.get("desiredNumberScheduled", 0), status.get("numberReady", 0), _age(obj, now)],
        )
    return [("Name", "string", "Name"), ("Age", "string", "Age")], [name, _age(obj, now)]


def table(kind: str, items: list[dict[str, Any]], resource_version: str, now: float) -> dict[str, Any]:
    """A Table of the objects, each row carrying its full object for kubectl's own use."""
    columns, _ = _columns_and_cells(kind, {}, now)
    rows = []
    for obj in items:
        columns, cells = _columns_and_cells(kind, obj, now)
        rows.append({"cells": cells, "object": obj})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": n,
                "type": t,
                "format": "name" if n == "Name" else "",
                "description": d,
                "priority": 1 if n in ("IP", "Node") and kind == "Pod" else 0,
            }
            for n, t, d in columns
        ],
        "rows": rows,
    }
