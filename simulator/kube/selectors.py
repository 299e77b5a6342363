"""Label and field selectors as the Kubernetes API server understands them (the subset clients send)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, str]], bool]

_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)\s*$")


class SelectorError(ValueError):
    """A selector string or object that cannot be parsed."""


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside a parenthesised value set."""
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return [t for t in (t.strip() for t in terms) if t]


def _term(text: str) -> Predicate:
    eq = _EQ_RE.match(text)
    if eq:
        key, op, value = eq.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    st = _SET_RE.match(text)
    if not st:
        raise SelectorError(f"cannot parse selector term {text!r}")
    negate, key, op, values_text = st.groups()
    if op is None:
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    if negate:
        raise SelectorError(f"cannot parse selector term {text!r}")
    values = {v.strip() for v in values_text.split(",") if v.strip()}
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def parse_selector(text: str | None) -> Predicate:
    """A predicate over a flat string map for a label or field selector string ('' selects everything)."""
    if not text:
        return lambda labels: True
    predicates = [_term(t) for t in _split_terms(text)]
    return lambda labels: all(p(labels) for p in predicates)


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector object (matchLabels, matchExpressions) selects these labels.

    An empty selector selects everything, as for PodDisruptionBudgets in policy/v1.
    """
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise SelectorError(f"unknown label selector operator {op!r}")
    return True


def pod_fields(pod: Mapping[str, Any]) -> dict[str, str]:
    """The fields a pod field selector may name."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    return {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "spec.nodeName": spec.get("nodeName") or "",
        "spec.restartPolicy": spec.get("restartPolicy", ""),
        "spec.schedulerName": spec.get("schedulerName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.phase": status.get("phase", ""),
        "status.podIP": status.get("podIP", ""),
    }


def object_fields(obj: Mapping[str, Any]) -> dict[str, str]:
    """The fields every kind supports in a field selector."""
    meta = obj.get("metadata", {})
    fields = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
    if obj.get("kind") == "Pod":
        fields.update(pod_fields(obj))
    elif obj.get("kind") == "Node":
        fields["spec.unschedulable"] = "true" if obj.get("spec", {}).get("unschedulable") else "false"
    elif obj.get("kind") in ("GPUReset", "GPUFence", "NodeReboot", "NodeValidation"):
        fields["spec.nodeName"] = str(obj.get("spec", {}).get("nodeName") or "")
    elif obj.get("kind") == "Event":
        involved = obj.get("involvedObject", {})
        for key in ("kind", "name", "namespace", "uid"):
            fields[f"involvedObject.{key}"] = involved.get(key, "") or ""
        fields["reason"] = obj.get("reason", "")
        fields["type"] = obj.get("type", "")
    return fields
