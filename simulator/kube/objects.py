"""Builders and readers for the Kubernetes objects the twin keeps as JSON dicts."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from connectors.kubernetes.annotations import GPU_INDICES

T = TypeVar("T")

GPU_RESOURCE = "nvidia.com/gpu"
GPU_ANNOTATION = GPU_INDICES  # the connector reads the same hint
WORKLOAD_LABEL = "sim.gpuops.io/workload"


# Kubernetes' rand.SafeEncodeString alphabet (no vowels, no look-alike digits): pod-template hashes and the
# five random characters of a generated name use only these.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def replica_pod_suffix(template_key: str, random_bytes: Iterable[int]) -> str:
    """`<pod-template-hash>-<5 chars>`: the suffix a Deployment's ReplicaSet gives its pods (`chat-api-` +
    `7d9f8c6b5-x2k4z`). The hash is stable per template, the rest comes from `random_bytes` (five)."""
    digest = hashlib.sha256(template_key.encode()).digest()
    template_hash = "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in digest[:10])
    return f"{template_hash}-{''.join(SAFE_ALPHABET[int(b) % len(SAFE_ALPHABET)] for b in random_bytes)}"


def generated_suffix(key: str) -> str:
    """Five characters of the safe alphabet, stable for `key`: the random part Kubernetes appends to a
    generated name, made reproducible for the twin."""
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in hashlib.sha256(key.encode()).digest()[:5])


def _clone(obj: Any) -> Any:
    if type(obj) is dict:
        return {k: _clone(v) for k, v in obj.items()}
    if type(obj) is list:
        return [_clone(v) for v in obj]
    return obj


def clone(obj: T) -> T:
    """A deep copy of JSON data (dicts, lists, scalars): about 2.5x faster than copy.deepcopy."""
    return cast(T, _clone(obj))


def rfc3339(ts: float) -> str:
    """Unix seconds as the RFC 3339 timestamp Kubernetes writes (second precision, Z)."""
    return datetime.fromtimestamp(math.floor(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """An RFC 3339 timestamp as unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's metadata, created empty if absent."""
    value = obj.setdefault("metadata", {})
    assert isinstance(value, dict)
    return value


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("annotations") or {})


def set_condition(
    obj: dict[str, Any], ctype: str, status: str, reason: str, message: str, now: float
) -> None:
    """Set one status condition, keeping lastTransitionTime when the status does not change."""
    conditions: list[dict[str, Any]] = obj.setdefault("status", {}).setdefault("conditions", [])
    stamp = rfc3339(now)
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = stamp
            cond.update(status=status, reason=reason, message=message)
            if "lastHeartbeatTime" in cond:
                cond["lastHeartbeatTime"] = stamp
            return
    new = {"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": stamp}
    if obj.get("kind") == "Node":
        new["lastHeartbeatTime"] = stamp
    conditions.append(new)


def condition_true(obj: dict[str, Any], ctype: str) -> bool:
    return any(
        c.get("type") == ctype and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions") or []
    )


def node_object(name: str, gpus: int, labels: dict[str, str] | None, now: float) -> dict[str, Any]:
    """A Ready, schedulable GPU node as the kubelet and the NVIDIA device plugin would report it."""
    capacity = {
        "cpu": "128",
        "memory": "2113445948Ki",
        "pods": "110",
        "ephemeral-storage": "3750233536Ki",
        GPU_RESOURCE: str(gpus),
    }
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.count": str(gpus),
                **(labels or {}),
            },
            "annotations": {},
        },
        "spec": {},
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            "conditions": [],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {
                "kubeletVersion": "v1.30.0",
                "kubeProxyVersion": "v1.30.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "containerd://1.7.0",
                "osImage": "Ubuntu 22.04 LTS",
                "kernelVersion": "5.15.0",
                "machineID": name,
                "systemUUID": name,
                "bootID": "0",
            },
        },
    }
    for ctype, reason in (
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ):
        set_condition(node, ctype, "False", reason, "", now)
    set_condition(node, "Ready", "True", "KubeletReady", "kubelet is posting ready status", now)
    return node


def pod_gpu_request(pod: dict[str, Any]) -> int:
    """GPUs a pod asks for: the sum of its containers' nvidia.com/gpu limits (or requests)."""
    total = 0
    for container in pod.get("spec", {}).get("containers") or []:
        resources = container.get("resources") or {}
        requested = (resources.get("requests") or {}).get(GPU_RESOURCE, 0)
        value = (resources.get("limits") or {}).get(GPU_RESOURCE, requested)
        total += int(value)
    return total


def pod_gpus(pod: dict[str, Any]) -> list[int]:
    """The GPU indices the twin assigned to a pod on its node."""
    text = annotations_of(pod).get(GPU_ANNOTATION, "")
    return [int(part) for part in text.split(",") if part.strip()]


def pod_running(pod: dict[str, Any]) -> bool:
    return bool(pod.get("status", {}).get("phase") == "Running")


def pod_ready(pod: dict[str, Any]) -> bool:
    return pod_running(pod) and condition_true(pod, "Ready") and "deletionTimestamp" not in pod["metadata"]


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


# Work that stays inside its node (an inference replica, a notebook, batch inference, a one-node job) tolerates
# the taint under which gpuops returns a node whose one InfiniBand port waits for repair, as an operator who
# serves such work configures it; a multi-node job's collectives cross every port, and it keeps away.
STAYS_IN_NODE = {"key": "gpuops.io/fabric-degraded", "operator": "Exists", "effect": "NoSchedule"}


def tolerates(pod: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Whether one of the pod's tolerations tolerates the taint."""
    for tol in pod.get("spec", {}).get("tolerations") or []:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (not tol.get("key") or tol.get("key") == taint.get("key")):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def resolve_int_or_percent(value: int | str, total: int, round_up: bool) -> int:
    """A PodDisruptionBudget's minAvailable / maxUnavailable as a pod count."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        fraction = float(text[:-1]) * total / 100.0
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(text)
