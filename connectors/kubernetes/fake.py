"""InMemoryCluster: a ClusterPort fake for runbook and agent tests, with the same rules as the real adapter.

Tests arrange nodes and pods with `add_node` / `add_pod`, make a PodDisruptionBudget block evictions
with `block_evictions`, and read what happened in `actions`.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from connectors.kubernetes import annotations as notes
from connectors.kubernetes.errors import (
    AlreadyExists,
    DisruptionBlocked,
    InvalidRequest,
    NotCordonedByGpuops,
    NotFound,
)
from connectors.kubernetes.models import (
    DeploymentScale,
    EventType,
    EvictionOutcome,
    NodeCondition,
    NodeInfo,
    NodeRequest,
    NodeValidation,
    PodInfo,
    Taint,
)
from connectors.kubernetes.port import request_suffix, retry_while_blocked


@dataclass(frozen=True)
class PostedEvent:
    kind: str
    name: str
    namespace: str
    reason: str
    message: str
    type: str


@dataclass
class InMemoryCluster:
    """A ClusterPort whose state lives in dicts. Evictions blocked N times succeed on attempt N+1.

    Simplifications against a live cluster: an evicted or deleted pod is gone at once (no Terminating
    grace period), and GPUReset / NodeReboot requests stay Pending until `finish_request`.
    """

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    pods: dict[tuple[str, str], PodInfo] = field(default_factory=dict)
    scales: dict[tuple[str, str], DeploymentScale] = field(default_factory=dict)
    requests: dict[str, NodeRequest] = field(default_factory=dict)
    validations: dict[str, NodeValidation] = field(default_factory=dict)
    events: list[PostedEvent] = field(default_factory=list)
    actions: list[tuple[str, ...]] = field(default_factory=list)
    _blocked: dict[tuple[str, str], int | None] = field(default_factory=dict)

    # ---------------------------------------------------------------- arranging

    def add_node(
        self,
        name: str,
        *,
        gpus: int = 8,
        ready: bool = True,
        unschedulable: bool = False,
        annotations: Mapping[str, str] | None = None,
    ) -> NodeInfo:
        node = NodeInfo(
            name=name,
            unschedulable=unschedulable,
            conditions=(NodeCondition("Ready", "True" if ready else "False"),),
            taints=(),
            gpu_capacity=gpus,
            gpu_allocatable=gpus,
            labels={"kubernetes.io/hostname": name},
            annotations=dict(annotations or {}),
        )
        self.nodes[name] = node
        return node

    def add_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        *,
        gpus: int = 0,
        owner_kind: str | None = "ReplicaSet",
        owner_name: str | None = None,
        uses_empty_dir: bool = False,
        annotations: Mapping[str, str] | None = None,
    ) -> PodInfo:
        pod = PodInfo(
            namespace=namespace,
            name=name,
            node=node,
            phase="Running",
            ready=True,
            owner_kind=owner_kind,
            owner_name=owner_name or (f"{name}-owner" if owner_kind else None),
            is_daemonset=owner_kind == "DaemonSet",
            is_mirror=False,
            uses_empty_dir=uses_empty_dir,
            terminating=False,
            gpu_count=gpus,
            gpu_indices=tuple(range(gpus)),
            annotations=dict(annotations or {}),
            uid=uuid.uuid4().hex,
        )
        self.pods[(namespace, name)] = pod
        return pod

    def block_evictions(self, namespace: str, name: str, times: int | None = None) -> None:
        """Make a PodDisruptionBudget refuse the next `times` evictions of the pod (None: always)."""
        self._blocked[(namespace, name)] = times

    # ---------------------------------------------------------------- nodes

    def _node(self, name: str) -> NodeInfo:
        try:
            return self.nodes[name]
        except KeyError:
            raise NotFound(f"node {name} not found; it may have been deleted meanwhile.") from None

    def get_node(self, name: str) -> NodeInfo:
        return self._node(name)

    def list_nodes(self) -> list[NodeInfo]:
        return [self.nodes[n] for n in sorted(self.nodes)]

    def cordon(self, node: str, *, reason: str, incident: str | None = None) -> NodeInfo:
        current = self._node(node)
        if current.unschedulable:
            return current
        marks = {notes.CORDONED_BY: notes.CORDON_OWNER, notes.CORDON_REASON: reason}
        if incident is not None:
            marks[notes.CORDON_INCIDENT] = incident
        self.actions.append(("cordon", node))
        updated = dataclasses.replace(
            current, unschedulable=True, annotations={**current.annotations, **marks}
        )
        self.nodes[node] = updated
        return updated

    def uncordon(self, node: str) -> NodeInfo:
        current = self._node(node)
        if current.unschedulable and not current.cordoned_by_gpuops:
            raise NotCordonedByGpuops(
                f"node {node} was cordoned by someone else; gpuops leaves it cordoned. "
                "Ask its owner to uncordon it."
            )
        kept = {k: v for k, v in current.annotations.items() if k not in notes.CORDON_ANNOTATIONS}
        if current.unschedulable:
            self.actions.append(("uncordon", node))
        updated = dataclasses.replace(current, unschedulable=False, annotations=kept)
        self.nodes[node] = updated
        return updated

    def add_taint(self, node: str, taint: Taint) -> NodeInfo:
        current = self._node(node)
        kept = tuple(t for t in current.taints if (t.key, t.effect) != (taint.key, taint.effect))
        self.actions.append(("add_taint", node, taint.key, taint.effect))
        self.nodes[node] = dataclasses.replace(current, taints=(*kept, taint))
        return self.nodes[node]

    def remove_taint(self, node: str, key: str, effect: str | None = None) -> NodeInfo:
        current = self._node(node)
        kept = tuple(t for t in current.taints if not (t.key == key and effect in (None, t.effect)))
        self.actions.append(("remove_taint", node, key))
        self.nodes[node] = dataclasses.replace(current, taints=kept)
        return self.nodes[node]

    # ---------------------------------------------------------------- pods

    def _pod(self, namespace: str, name: str) -> PodInfo:
        try:
            return self.pods[(namespace, name)]
        except KeyError:
            raise NotFound(f"pod {namespace}/{name} not found; it may have been deleted meanwhile.") from None

    def list_pods(self, node: str) -> list[PodInfo]:
        """Like a field selector: an unknown node simply has no pods."""
        return [p for k, p in sorted(self.pods.items()) if p.node == node]

    def list_unscheduled_pods(self) -> list[PodInfo]:
        return [p for _, p in sorted(self.pods.items()) if not p.node and p.phase == "Pending"]

    def get_pod(self, namespace: str, name: str) -> PodInfo:
        return self._pod(namespace, name)

    def _evict_once(self, namespace: str, name: str) -> EvictionOutcome:
        if (namespace, name) not in self.pods:
            return "already_gone"
        key = (namespace, name)
        if key in self._blocked:
            left = self._blocked[key]
            if left is None or left > 0:
                if left is not None:
                    self._blocked[key] = left - 1
                raise DisruptionBlocked(
                    f"evict pod {namespace}/{name}: Cannot evict pod as it would violate "
                    "the pod's disruption budget."
                )
            del self._blocked[key]
        del self.pods[key]
        self.actions.append(("evict", namespace, name))
        return "evicted"

    def evict_pod(
        self,
        namespace: str,
        name: str,
        *,
        deadline_s: float = 300.0,
        retry_interval_s: float = 5.0,
        grace_period_s: int | None = None,
    ) -> EvictionOutcome:
        return retry_while_blocked(
            lambda: self._evict_once(namespace, name),
            deadline_s=deadline_s,
            retry_interval_s=retry_interval_s,
            what=f"evict pod {namespace}/{name}",
            clock=self.clock,
            sleep=self.sleep,
        )

    def delete_pod(self, namespace: str, name: str, *, grace_period_s: int | None = None) -> None:
        self._pod(namespace, name)
        del self.pods[(namespace, name)]
        self.actions.append(("delete", namespace, name))

    def annotate_pod(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> PodInfo:
        current = self._pod(namespace, name)
        merged = dict(current.annotations)
        for key, value in annotations.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self.actions.append(("annotate", namespace, name, *sorted(annotations)))
        self.pods[(namespace, name)] = dataclasses.replace(current, annotations=merged)
        return self.pods[(namespace, name)]

    def request_checkpoint(self, namespace: str, name: str, request_id: str) -> PodInfo:
        return self.annotate_pod(namespace, name, {notes.CHECKPOINT_REQUESTED: request_id})

    def answer_checkpoint(self, namespace: str, name: str) -> PodInfo:
        """Play the training job: mark the latest checkpoint request done."""
        requested = self._pod(namespace, name).checkpoint_requested
        if requested is None:
            raise InvalidRequest(f"pod {namespace}/{name} has no checkpoint request to answer")
        return self.annotate_pod(namespace, name, {notes.CHECKPOINT_DONE: requested})

    # ---------------------------------------------------------------- deployments

    def get_scale(self, namespace: str, deployment: str) -> DeploymentScale:
        try:
            return self.scales[(namespace, deployment)]
        except KeyError:
            raise NotFound(f"deployment {namespace}/{deployment} not found.") from None

    def set_scale(self, namespace: str, deployment: str, replicas: int) -> DeploymentScale:
        if replicas < 0:
            raise InvalidRequest(
                f"scale deployment {namespace}/{deployment}: replicas must be >= 0, got {replicas}"
            )
        current = self.get_scale(namespace, deployment)
        self.actions.append(("scale", namespace, deployment, str(replicas)))
        self.scales[(namespace, deployment)] = dataclasses.replace(
            current, replicas=replicas, current=replicas
        )
        return self.scales[(namespace, deployment)]

    # ---------------------------------------------------------------- requests and events

    def _request(self, kind: Literal["GPUReset", "GPUFence", "NodeReboot"], name: str, node: str,
                 gpu: int | None, gpu_uuid: str | None = None) -> NodeRequest:
        existing = self.requests.get(name)
        if existing is not None:
            if (existing.kind, existing.node, existing.gpu) != (kind, node, gpu):
                raise AlreadyExists(f"{kind} {name} exists for another target; choose another request name.")
            return existing
        request = NodeRequest(kind, name, node, gpu, "Pending", uuid=gpu_uuid)
        if node not in self.nodes:  # the API accepts it; the node agent then fails it
            request = dataclasses.replace(request, phase="Failed", message=f"node {node} not found")
        self.requests[name] = request
        self.actions.append((kind, node, "" if gpu is None else str(gpu)))
        return request

    def request_gpu_reset(self, node: str, gpu: int, *, name: str | None = None,
                          uuid: str | None = None) -> NodeRequest:
        return self._request("GPUReset", name or f"{node}-gpu{gpu}-{request_suffix()}", node, gpu, uuid)

    def request_gpu_fence(self, node: str, gpu: int, *, name: str | None = None,
                          uuid: str | None = None) -> NodeRequest:
        return self._request("GPUFence", name or f"{node}-gpu{gpu}-{request_suffix()}", node, gpu, uuid)

    def get_gpu_fence(self, name: str) -> NodeRequest:
        return self._get_request("GPUFence", name)

    def request_node_reboot(self, node: str, *, name: str | None = None) -> NodeRequest:
        return self._request("NodeReboot", name or f"{node}-{request_suffix()}", node, None)

    def _get_request(self, kind: str, name: str) -> NodeRequest:
        request = self.requests.get(name)
        if request is None or request.kind != kind:
            raise NotFound(f"{kind} {name} not found.")
        return request

    def get_gpu_reset(self, name: str) -> NodeRequest:
        return self._get_request("GPUReset", name)

    def get_node_reboot(self, name: str) -> NodeRequest:
        return self._get_request("NodeReboot", name)

    def finish_request(self, name: str, phase: str = "Succeeded", message: str = "") -> NodeRequest:
        """Play the node agent: move a request to its final phase."""
        current = self.requests[name]
        self.requests[name] = dataclasses.replace(
            current, phase="Failed" if phase == "Failed" else "Succeeded", message=message
        )
        node = self.nodes.get(current.node)
        if current.kind == "GPUFence" and phase != "Failed" and not current.finished and node is not None:
            # the device plugin, restarted, no longer lists the fenced GPU
            self.nodes[current.node] = dataclasses.replace(node, gpu_allocatable=max(0, node.gpu_allocatable - 1))
        return self.requests[name]

    def request_node_validation(
        self, node: str, *, name: str, gpus: Sequence[int] = (), level: int = 2
    ) -> NodeValidation:
        existing = self.validations.get(name)
        if existing is not None:
            if existing.node != node:
                raise AlreadyExists(f"NodeValidation {name} exists for node {existing.node}.")
            return existing
        self.validations[name] = NodeValidation(name, node, "Pending", created_at=self.clock())
        self.actions.append(("NodeValidation", node, ",".join(map(str, gpus))))
        return self.validations[name]

    def get_node_validation(self, name: str) -> NodeValidation:
        if name not in self.validations:
            raise NotFound(f"NodeValidation {name} not found.")
        return self.validations[name]

    def finish_validation(self, name: str, *, passed: bool, failed_tests: Sequence[str] = (),
                          phase: str = "Succeeded", message: str = "") -> NodeValidation:
        """Play the node agent: the diagnostic ran (Succeeded, with its verdict) or could not (Failed)."""
        current = self.validations[name]
        self.validations[name] = dataclasses.replace(
            current, phase="Failed" if phase == "Failed" else "Succeeded", message=message,
            passed=passed if phase != "Failed" else None, failed_tests=tuple(failed_tests))
        return self.validations[name]

    def post_event(
        self,
        *,
        kind: str,
        name: str,
        reason: str,
        message: str,
        namespace: str = "default",
        type: EventType = "Normal",
    ) -> None:
        self.events.append(PostedEvent(kind, name, namespace, reason, message, type))
