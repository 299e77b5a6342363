"""Validation of objects written to the twin: malformed input is refused (422) before a controller sees it."""

from __future__ import annotations

import re
from typing import Any

from simulator.kube.errors import Invalid
from simulator.kube.objects import GPU_ANNOTATION, GPU_RESOURCE
from simulator.kube.selectors import SelectorError, label_selector_matches

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_PERCENT = re.compile(r"^\d+%$")


def _fail(kind: str, name: str, path: str, detail: str) -> Invalid:
    return Invalid(f'{kind} "{name}" is invalid: {path}: {detail}', kind=kind, name=name)


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _non_negative_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and value.isdigit()


def validate_object(plural: str, kind: str, obj: Any) -> None:
    """Raise Invalid (HTTP 422) when `obj` is not a well-formed object of this resource."""
    if not isinstance(obj, dict):
        raise Invalid(f"a {kind} must be a JSON object", kind=kind)
    md = obj.get("metadata")
    if not isinstance(md, dict):
        raise Invalid(f"a {kind} needs metadata", kind=kind)
    name = md.get("name") or md.get("generateName") or ""
    if not isinstance(name, str) or len(name) > 253 or not (_NAME.match(name) or name.endswith("-")):
        raise _fail(kind, str(name), "metadata.name", "must be a lowercase RFC 1123 name")
    for field in ("labels", "annotations"):
        if md.get(field) is not None and not _string_map(md[field]):
            raise _fail(kind, name, f"metadata.{field}", "must map strings to strings")
    spec = obj.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise _fail(kind, name, "spec", "must be an object")
    check = _CHECKS.get(plural)
    if check is not None:
        check(kind, name, obj)


def _selector(kind: str, name: str, selector: Any, path: str) -> None:
    if selector is None:
        return
    if not isinstance(selector, dict) or not _string_map(selector.get("matchLabels") or {}):
        raise _fail(kind, name, path, "must be a label selector")
    try:
        label_selector_matches(selector, {})
    except SelectorError as exc:
        raise _fail(kind, name, path, str(exc)) from exc


def _pod(kind: str, name: str, obj: dict[str, Any]) -> None:
    _pod_spec(kind, name, obj.get("spec") or {}, "spec")
    gpus = (obj["metadata"].get("annotations") or {}).get(GPU_ANNOTATION)
    if gpus is not None and not all(p.strip().isdigit() for p in gpus.split(",") if p.strip()):
        raise _fail(kind, name, f"metadata.annotations[{GPU_ANNOTATION}]", "must list GPU indices, e.g. 0,1")


def _pod_spec(kind: str, name: str, spec: dict[str, Any], path: str) -> None:
    containers = spec.get("containers", [])
    if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
        raise _fail(kind, name, f"{path}.containers", "must be a list of containers")
    for i, container in enumerate(containers):
        resources = container.get("resources") or {}
        if not isinstance(resources, dict):
            raise _fail(kind, name, f"{path}.containers[{i}].resources", "must be an object")
        for part in ("limits", "requests"):
            quantities = resources.get(part) or {}
            if not isinstance(quantities, dict):
                raise _fail(kind, name, f"{path}.containers[{i}].resources.{part}", "must be an object")
            value = quantities.get(GPU_RESOURCE)
            if value is not None and not _non_negative_int(value):
                raise _fail(
                    kind,
                    name,
                    f"{path}.containers[{i}].resources.{part}[{GPU_RESOURCE}]",
                    f"{value!r}: GPUs must be a whole number >= 0",
                )
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and not _non_negative_int(grace):
        raise _fail(kind, name, f"{path}.terminationGracePeriodSeconds", "must be an integer >= 0")
    if spec.get("nodeSelector") is not None and not _string_map(spec["nodeSelector"]):
        raise _fail(kind, name, f"{path}.nodeSelector", "must map strings to strings")
    if not isinstance(spec.get("tolerations", []), list):
        raise _fail(kind, name, f"{path}.tolerations", "must be a list")


def _template(kind: str, name: str, obj: dict[str, Any]) -> None:
    template = (obj.get("spec") or {}).get("template") or {}
    if not isinstance(template, dict) or not isinstance(template.get("spec", {}), dict):
        raise _fail(kind, name, "spec.template", "must be a pod template")
    _pod_spec(kind, name, template.get("spec") or {}, "spec.template.spec")
    _selector(kind, name, (obj.get("spec") or {}).get("selector"), "spec.selector")


def _deployment(kind: str, name: str, obj: dict[str, Any]) -> None:
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise _fail(kind, name, "spec.replicas", f"{replicas!r}: must be an integer >= 0")
    _template(kind, name, obj)


def _pdb(kind: str, name: str, obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    if "minAvailable" in spec and "maxUnavailable" in spec:
        raise _fail(kind, name, "spec", "minAvailable and maxUnavailable cannot both be set")
    for field in ("minAvailable", "maxUnavailable"):
        value = spec.get(field)
        if value is not None and not (
            _non_negative_int(value) or (isinstance(value, str) and _PERCENT.match(value))
        ):
            raise _fail(kind, name, f"spec.{field}", f"{value!r}: must be an integer >= 0 or a percentage")
    policy = spec.get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
    if policy not in ("IfHealthyBudget", "AlwaysAllow"):
        raise _fail(kind, name, "spec.unhealthyPodEvictionPolicy", "must be IfHealthyBudget or AlwaysAllow")
    _selector(kind, name, spec.get("selector"), "spec.selector")


def _node(kind: str, name: str, obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    if not isinstance(spec.get("unschedulable", False), bool):
        raise _fail(kind, name, "spec.unschedulable", "must be true or false")
    taints = spec.get("taints") or []
    if not isinstance(taints, list):
        raise _fail(kind, name, "spec.taints", "must be a list")
    for i, taint in enumerate(taints):
        if not isinstance(taint, dict) or not isinstance(taint.get("key"), str) or not taint.get("key"):
            raise _fail(kind, name, f"spec.taints[{i}].key", "is required")
        if taint.get("effect") not in _TAINT_EFFECTS:
            raise _fail(kind, name, f"spec.taints[{i}].effect", f"must be one of {', '.join(_TAINT_EFFECTS)}")


def _event(kind: str, name: str, obj: dict[str, Any]) -> None:
    if not isinstance(obj.get("involvedObject"), dict):
        raise _fail(kind, name, "involvedObject", "is required")


_CHECKS = {
    "pods": _pod,
    "deployments": _deployment,
    "daemonsets": _template,
    "poddisruptionbudgets": _pdb,
    "nodes": _node,
    "events": _event,
}
