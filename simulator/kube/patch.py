"""The three PATCH flavours kubectl and the client libraries send: JSON merge, strategic merge, JSON patch."""

from __future__ import annotations

import copy
from typing import Any

from simulator.kube.errors import BadRequest, Invalid, UnsupportedMediaType

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# Lists that strategic merge merges by a key instead of replacing (the subset of the
# Kubernetes schema the twin's objects use); every other list is replaced.
MERGE_KEYS: dict[str, str] = {
    "taints": "key",
    "tolerations": "key",
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "conditions": "type",
    "ownerReferences": "uid",
    "finalizers": "",
    "addresses": "type",
    "imagePullSecrets": "name",
}


def apply_patch(target: dict[str, Any], body: Any, content_type: str) -> dict[str, Any]:
    """The object after applying a PATCH body of the given content type (the target is not changed)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == MERGE_PATCH:
        return _require_object(merge_patch(target, _require_object(body)))
    if kind == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(target, _require_object(body))
    if kind == JSON_PATCH:
        if not isinstance(body, list):
            raise BadRequest("a JSON patch body must be a list of operations")
        return _require_object(json_patch(target, body))
    raise UnsupportedMediaType(
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}"
    )


def _require_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("the patch must be a JSON object")
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Kubernetes strategic merge patch for the fields the twin's objects have.

    Maps merge and null deletes, like a merge patch; lists named in MERGE_KEYS merge element by
    element on their key (an element with `$patch: delete` is removed); `$patch: replace` replaces;
    `$setElementOrder/...` and `$retainKeys` directives are accepted and ignored.
    """
    result = _smp_map(target, patch)
    assert isinstance(result, dict)
    return result


def _smp_map(target: Any, patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _smp_list(result.get(key) or [], value, MERGE_KEYS[key])
        else:
            result[key] = copy.deepcopy(value)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/") and isinstance(value, list):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
    return result


def _smp_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    if not merge_key:  # a set of primitives (finalizers): union
        return list(current) + [v for v in patch if v not in current]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise Invalid(f"strategic merge patch: list element without merge key {merge_key!r}")
        index = next((i for i, cur in enumerate(result) if cur.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("$")})
        else:
            result[index] = _smp_map(result[index], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise Invalid(f"JSON patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise Invalid(f"JSON patch path {path!r} does not exist")
    return node


def json_patch(target: Any, operations: list[Any]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise BadRequest(f"malformed JSON patch operation {op!r}")
        name, path = op["op"], op["path"]
        if name in ("move", "copy"):
            value = _get(doc, _pointer(op.get("from", "")), op.get("from", ""))
            if name == "move":
                doc = _remove(doc, _pointer(op["from"]), op["from"])
            doc = _add(doc, _pointer(path), path, copy.deepcopy(value))
        elif name == "add":
            doc = _add(doc, _pointer(path), path, copy.deepcopy(op.get("value")))
        elif name == "remove":
            doc = _remove(doc, _pointer(path), path)
        elif name == "replace":
            doc = _remove(doc, _pointer(path), path)
            doc = _add(doc, _pointer(path), path, copy.deepcopy(op.get("value")))
        elif name == "test":
            if _get(doc, _pointer(path), path) != op.get("value"):
                raise Invalid(f"JSON patch test failed at {path!r}")
        else:
            raise BadRequest(f"unknown JSON patch operation {name!r}")
    return doc


def _get(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise Invalid(f"JSON patch path {path!r} does not exist")


def _add(doc: Any, parts: list[str], path: str, value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise Invalid(f"JSON patch path {path!r}: index out of range")
    else:
        raise Invalid(f"JSON patch path {path!r} does not exist")
    return doc


def _remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        return None
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise Invalid(f"JSON patch path {path!r} does not exist")
    return doc
