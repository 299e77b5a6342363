"""The twin's Kubernetes state: objects kept as their JSON dicts, and the controllers a cluster runs on them.

Time is simulated: the state reads `clock()` to stamp what it writes, and `tick(now)` moves every
time-based transition forward (graceful terminations, scheduling, pod starts, GPU resets, reboots,
training-job checkpoints). Listeners (the physics) hear `KubeEvent`s after the state lock is released,
so a listener may call back into the state.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from connectors.kubernetes.annotations import CHECKPOINT_DONE, CHECKPOINT_REQUESTED
from simulator.kube.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    DisruptionBudgetBlocked,
    Gone,
    Invalid,
    NotFound,
)
from simulator.kube.objects import (
    GPU_ANNOTATION,
    GPU_RESOURCE,
    WORKLOAD_LABEL,
    annotations_of,
    clone,
    condition_true,
    controller_of,
    labels_of,
    meta,
    node_object,
    pod_gpu_request,
    pod_gpus,
    pod_ready,
    pod_running,
    replica_pod_suffix,
    resolve_int_or_percent,
    rfc3339,
    set_condition,
    tolerates,
)
from simulator.kube.resources import BY_PLURAL
from simulator.kube.selectors import SelectorError, label_selector_matches, object_fields, parse_selector
from simulator.kube.validation import validate_object

__all__ = [
    "CHECKPOINT_DONE",
    "CHECKPOINT_REQUESTED",
    "CHECKPOINT_SECONDS_ANNOTATION",
    "GPU_ANNOTATION",
    "WORKLOAD_LABEL",
    "KubeEvent",
    "KubeState",
]

CHECKPOINT_SECONDS_ANNOTATION = "sim.gpuops.io/checkpoint-seconds"
"""On a training Pod (or its template): the job checkpoints when asked, taking this many seconds."""

TERMINATION_REASON = "sim.gpuops.io/termination-reason"
AGENT = "gpuops-node-agent"
"""The component the twin plays when it carries out GPUReset, GPUFence and NodeReboot requests."""

EventKind = Literal[
    "gpu_reset",
    "gpu_fenced",
    "node_reboot_started",
    "node_rebooted",
    "pod_started",
    "pod_stopped",
    "node_cordoned",
    "node_uncordoned",
    "deployment_scaled",
]
Key = tuple[str, str]  # (namespace or "", name)
OwnerKey = tuple[str, str, str]  # (controller kind, namespace, name)


@dataclass(frozen=True)
class KubeEvent:
    """A change in the cluster that the physics reacts to."""

    kind: EventKind
    node: str | None
    gpu: int | None = None
    pod: str | None = None
    namespace: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


START_SECONDS_ANNOTATION = "sim.gpuops.io/start-seconds"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"


def _deletion_cost(pod: dict[str, Any]) -> int:
    """A pod's `controller.kubernetes.io/pod-deletion-cost` (0 when absent or not an integer, as Kubernetes
    reads it)."""
    try:
        return int(annotations_of(pod).get(DELETION_COST_ANNOTATION, "0"))
    except ValueError:
        return 0


class KubeState:
    """Thread-safe in-memory store of Kubernetes objects kept as their JSON dicts.

    Each object has apiVersion, kind, metadata, spec and status, exactly as the API serves it.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        pod_start_seconds: float = 5.0,
        gpu_reset_seconds: float = 30.0,
        node_reboot_seconds: float = 240.0,
        default_grace_seconds: int = 30,
        max_events: int = 2000,
        watch_history: int = 20000,
        external_node_agent: bool = False,
    ) -> None:
        self._clock = clock
        self.external_node_agent = external_node_agent
        """Leave GPUReset, GPUFence, NodeReboot and NodeValidation requests to a real node agent (`gpuops
        node-agent`)."""
        self.pod_start_seconds = pod_start_seconds
        # a pod's start time chosen by whoever runs its workload (None: the annotation, else pod_start_seconds)
        self.start_seconds_of: Callable[[dict[str, Any]], float | None] | None = None
        self.gpu_reset_seconds = gpu_reset_seconds
        self.node_reboot_seconds = node_reboot_seconds
        self.default_grace_seconds = default_grace_seconds
        self.max_events = max_events
        self._lock = threading.RLock()
        self._depth = 0
        self._pending: list[KubeEvent] = []
        self._listeners: list[Callable[[KubeEvent], None]] = []
        self._rv = 0
        self._store: dict[str, dict[Key, dict[str, Any]]] = {plural: {} for plural in BY_PLURAL}
        self._unhealthy_gpus: set[tuple[str, int]] = set()
        self.gpu_uuids: dict[tuple[str, int], str] = {}
        """Each host GPU's UUID (by node and index), as its telemetry names it: the hosts' nvidia-smi lists them."""
        self._fenced_gpus: set[tuple[str, int]] = set()
        """GPUs in the driver's drain state (a GPUFence): the device plugin no longer lists them, until the node's
        driver reloads (a reboot)."""
        self._reboot_done_at: dict[str, float] = {}
        self._host_reboot_at: dict[str, float] = {}
        self._reset_done_at: dict[str, float] = {}
        self._checkpoint_due: dict[Key, tuple[str, float]] = {}
        self._pod_start_at: dict[Key, float] = {}
        self._owner_of: dict[Key, OwnerKey | None] = {}
        self._by_owner: dict[OwnerKey, set[Key]] = {}
        self._reconciled_rv = -1
        self._dirty_deployments: set[Key] = set()
        self._terminate_at: dict[Key, float] = {}
        self._log: deque[tuple[int, str, str, dict[str, Any]]] = deque(maxlen=watch_history)
        for ns in ("default", "kube-system"):
            self._put(
                "namespaces",
                {"metadata": {"name": ns}, "spec": {}, "status": {"phase": "Active"}},
                create=True,
            )

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _mutation(self) -> Iterator[None]:
        """Hold the lock; when the outermost mutation ends, tell the listeners what happened."""
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                events: list[KubeEvent] = []
                if self._depth == 0:
                    events, self._pending = self._pending, []
        for event in events:
            for listener in list(self._listeners):
                listener(event)

    def _emit(self, event: KubeEvent) -> None:
        self._pending.append(event)

    def _record(
        self,
        obj: dict[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "kubelet",
    ) -> None:
        """Write a core/v1 Event about `obj`, as the component that would (kept to the last `max_events`)."""
        md = obj["metadata"]
        namespace = md.get("namespace") or "default"
        stamp = rfc3339(self._clock())
        event = {
            "metadata": {"name": f"{md['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", ""),
                "name": md["name"],
                "namespace": md.get("namespace"),
                "uid": md.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": component, **({"host": md["name"]} if obj.get("kind") == "Node" else {})},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self._put("events", event, create=True)
        events = self._store["events"]
        while len(events) > self.max_events:
            self._remove("events", next(iter(events)))

    def now(self) -> float:
        """The simulated time the state stamps its writes with."""
        return self._clock()

    def resource_version(self) -> str:
        """The latest resourceVersion written (a list's resourceVersion)."""
        with self._lock:
            return str(self._rv)

    def _put(self, plural: str, obj: dict[str, Any], *, create: bool = False) -> dict[str, Any]:
        """Store an object, bumping its resourceVersion; on create fill in the server-set metadata."""
        res = BY_PLURAL[plural]
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        md = meta(obj)
        name = md.get("name")
        if not name and md.get("generateName"):
            name = md["name"] = f"{md['generateName']}{uuid.uuid4().hex[:5]}"
        if not name:
            raise Invalid(f"{res.kind} needs metadata.name", kind=res.kind)
        namespace = ""
        if res.namespaced:
            namespace = md.setdefault("namespace", "default") or "default"
            md["namespace"] = namespace
            if ("", namespace) not in self._store["namespaces"]:
                self._put(
                    "namespaces",
                    {"metadata": {"name": namespace}, "spec": {}, "status": {"phase": "Active"}},
                    create=True,
                )
        else:
            md.pop("namespace", None)
        key = (namespace, name)
        if create:
            if key in self._store[plural]:
                raise AlreadyExists(
                    f'{plural} "{name}" already exists', kind=plural, name=name, group=res.group
                )
            md.setdefault("uid", str(uuid.uuid4()))
            md.setdefault("creationTimestamp", rfc3339(self._clock()))
            md["generation"] = 1
        self._rv += 1
        md["resourceVersion"] = str(self._rv)
        self._store[plural][key] = obj
        if plural == "pods":
            self._index_pod(key, obj)
            self._mark_owner_dirty(key)
        elif plural == "deployments":
            self._dirty_deployments.add(key)
        self._log.append((self._rv, plural, "ADDED" if create else "MODIFIED", clone(obj)))
        return obj

    def _remove(self, plural: str, key: Key) -> dict[str, Any]:
        """Drop an object from the store, logging its deletion for watchers."""
        obj = self._store[plural].pop(key)
        if plural == "pods":
            self._mark_owner_dirty(key)
            owner = self._owner_of.pop(key, None)
            if owner is not None:
                self._by_owner.get(owner, set()).discard(key)
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._log.append((self._rv, plural, "DELETED", clone(obj)))
        return obj

    def changes_since(
        self, plural: str, resource_version: int
    ) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        """Watch events (type, object) of one resource after `resource_version`, and the latest version.

        Raises Gone when the change log no longer reaches back that far (the client must list again).
        """
        with self._lock:
            if self._log and resource_version < self._log[0][0] - 1 and len(self._log) == self._log.maxlen:
                raise Gone(f"too old resource version: {resource_version} ({self._log[0][0] - 1})")
            out = [
                (kind, clone(obj))
                for rv, res, kind, obj in self._log
                if rv > resource_version and res == plural
            ]
            return out, self._rv

    def object_filter(
        self, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> Callable[[dict[str, Any]], bool]:
        """A predicate for objects in `namespace` matching the selectors (BadRequest if they do not parse)."""
        try:
            labels_ok = parse_selector(label_selector)
            fields_ok = parse_selector(field_selector)
        except SelectorError as exc:
            raise BadRequest(f"unable to parse requirement: {exc}") from exc

        def matches(obj: dict[str, Any]) -> bool:
            in_namespace = namespace is None or obj["metadata"].get("namespace", "") == namespace
            return in_namespace and labels_ok(labels_of(obj)) and fields_ok(object_fields(obj))

        return matches

    def _find(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        res = BY_PLURAL[plural]
        obj = self._store[plural].get((namespace if res.namespaced else "", name))
        if obj is None:
            raise NotFound(
                f'{plural}{"." + res.group if res.group else ""} "{name}" not found',
                kind=plural,
                name=name,
                group=res.group,
            )
        return obj

    # ---------------------------------------------------------- generic API (used by the HTTP surface)

    def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """A copy of one object; NotFound if absent."""
        with self._lock:
            return clone(self._find(plural, namespace, name))

    def list_objects(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Copies of the matching objects, sorted by namespace and name, and the list's resourceVersion."""
        matches = self.object_filter(namespace, label_selector, field_selector)
        with self._lock:
            items = [clone(obj) for _, obj in sorted(self._store[plural].items()) if matches(obj)]
            return items, str(self._rv)

    def create_object(self, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object as the API server would (pods, deployments, PDBs, events, GPU resets, reboots)."""
        with self._mutation():
            obj = clone(obj)
            if BY_PLURAL[plural].namespaced:
                body_ns = obj.get("metadata", {}).get("namespace")
                if body_ns and body_ns != namespace:
                    raise Invalid(
                        f"the namespace of the object ({body_ns}) does not match the namespace "
                        f"of the request ({namespace})"
                    )
                meta(obj)["namespace"] = namespace
            meta(obj).pop("resourceVersion", None)
            created = self._create(plural, obj)
            self._reconcile()
            return clone(created)

    def _create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        validate_object(plural, BY_PLURAL[plural].kind, obj)
        if plural == "pods":
            return self._create_pod(obj, start_now=False)
        if plural == "deployments":
            obj.setdefault("spec", {}).setdefault("replicas", 1)
            obj.setdefault("status", {})
        if plural in ("gpuresets", "gpufences", "nodereboots", "nodevalidations"):
            self._validate_request(plural, obj)
            obj["status"] = {"phase": "Pending", "message": "waiting for the node agent"}
        if plural == "events":
            obj.setdefault("count", 1)
            obj.setdefault("firstTimestamp", rfc3339(self._clock()))
            obj.setdefault("lastTimestamp", rfc3339(self._clock()))
            obj.setdefault("type", "Normal")
        return self._put(plural, obj, create=True)

    def update_object(
        self,
        plural: str,
        namespace: str,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        subresource: str = "",
    ) -> dict[str, Any]:
        """Replace an object by `change(copy of current)`.

        A resourceVersion in the result must match the stored one, else Conflict.
        """
        with self._mutation():
            current = self._find(plural, namespace, name)
            proposed = change(clone(current))
            validate_object(plural, BY_PLURAL[plural].kind, proposed)
            md = meta(proposed)
            expected = md.get("resourceVersion")
            if expected and expected != current["metadata"]["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    kind=plural,
                    name=name,
                    group=BY_PLURAL[plural].group,
                )
            if md.get("name", name) != name:
                raise Invalid(f"metadata.name cannot change from {name!r}", kind=plural, name=name)
            for server_field in ("uid", "creationTimestamp", "namespace", "deletionTimestamp", "generation"):
                if server_field in current["metadata"]:
                    md[server_field] = current["metadata"][server_field]
                else:
                    md.pop(server_field, None)
            md["name"] = name
            if subresource == "status":
                proposed = {**current, "status": proposed.get("status", {})}
            elif "status" in current:
                # Main resource writes do not change status; status belongs to the controllers.
                proposed["status"] = current["status"]
            if proposed.get("spec") != current.get("spec"):
                meta(proposed)["generation"] = current["metadata"].get("generation", 1) + 1
            updated = self._put(plural, proposed)
            self._after_write(plural, current, updated)
            self._reconcile()
            return clone(updated)

    def delete_object(
        self,
        plural: str,
        namespace: str,
        name: str,
        grace_seconds: int | None = None,
        precondition_uid: str | None = None,
    ) -> dict[str, Any]:
        """Delete an object; pods terminate gracefully over `grace_seconds` of simulated time."""
        with self._mutation():
            obj = self._find(plural, namespace, name)
            if precondition_uid and obj["metadata"].get("uid") != precondition_uid:
                raise Conflict(
                    f"Precondition failed: UID in precondition: {precondition_uid}, "
                    f"UID in object meta: {obj['metadata'].get('uid')}",
                    kind=plural,
                    name=name,
                )
            if plural == "pods":
                result = self._delete_pod(namespace, name, grace_seconds, reason="Deleted")
            else:
                result = self._remove(plural, self._key(plural, namespace, name))
                owner_kind = {"deployments": "Deployment", "daemonsets": "DaemonSet"}.get(plural)
                if owner_kind:  # the garbage collector removes what the owner controlled
                    for pod in self._owned_pods(owner_kind, namespace, name):
                        self._delete_pod(namespace, pod["metadata"]["name"], None, reason="OwnerDeleted")
            self._reconcile()
            return clone(result)

    def _key(self, plural: str, namespace: str, name: str) -> Key:
        return (namespace if BY_PLURAL[plural].namespaced else "", name)

    # ------------------------------------------------------------------ the interface the simulator uses

    def add_node(self, name: str, gpus: int, labels: dict[str, str] | None = None) -> None:
        """Add a Ready, schedulable node with `gpus` allocatable nvidia.com/gpu."""
        with self._mutation():
            self._put("nodes", node_object(name, gpus, labels, self._clock()), create=True)
            self._reconcile()

    def add_pod(self, pod: dict[str, Any]) -> None:
        """Add a Pod; with spec.nodeName it is bound and Running at once (GPU_ANNOTATION says which GPUs)."""
        with self._mutation():
            body = clone(pod)
            validate_object("pods", "Pod", body)
            self._create_pod(body, start_now=True)
            self._reconcile()

    def add_deployment(self, deployment: dict[str, Any]) -> None:
        """Add an apps/v1 Deployment; its replicas are placed where capacity allows and Running at once."""
        with self._mutation():
            dep = clone(deployment)
            dep.setdefault("spec", {}).setdefault("replicas", 1)
            dep.setdefault("status", {})
            validate_object("deployments", "Deployment", dep)
            self._put("deployments", dep, create=True)
            self._reconcile()
            self._schedule(start_now=True)
            self._reconcile()

    def add_pdb(self, pdb: dict[str, Any]) -> None:
        """Add a policy/v1 PodDisruptionBudget."""
        with self._mutation():
            body = clone(pdb)
            body.setdefault("status", {})
            validate_object("poddisruptionbudgets", "PodDisruptionBudget", body)
            self._put("poddisruptionbudgets", body, create=True)
            self._reconcile()

    def add_daemonset(self, ds: dict[str, Any]) -> None:
        """Add an apps/v1 DaemonSet; its pods run on every node (they tolerate cordons)."""
        with self._mutation():
            body = clone(ds)
            body.setdefault("status", {})
            validate_object("daemonsets", "DaemonSet", body)
            self._put("daemonsets", body, create=True)
            self._reconcile()

    def list_nodes(self) -> list[dict[str, Any]]:
        return self.list_objects("nodes")[0]

    def get_node(self, name: str) -> dict[str, Any]:
        """A copy of the node; NotFound (a KeyError) if absent."""
        return self.get_object("nodes", "", name)

    def list_pods(self, node: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.list_objects("pods", namespace, field_selector=f"spec.nodeName={node}" if node else None)[
            0
        ]

    def list_deployments(self) -> list[dict[str, Any]]:
        return self.list_objects("deployments")[0]

    def gpu_assignments(self) -> dict[tuple[str, int], tuple[str, str, str]]:
        """(node, gpu) -> (pod, namespace, container) for Running pods."""
        with self._lock:
            out: dict[tuple[str, int], tuple[str, str, str]] = {}
            for (namespace, name), pod in self._store["pods"].items():
                node = pod.get("spec", {}).get("nodeName")
                if not node or not pod_running(pod):
                    continue
                containers = pod.get("spec", {}).get("containers") or [{}]
                for gpu in pod_gpus(pod):
                    out[(node, gpu)] = (name, namespace, containers[0].get("name", name))
            return out

    def node_ready(self, name: str) -> bool:
        with self._lock:
            return condition_true(self._find("nodes", "", name), "Ready")

    def set_node_ready(self, name: str, ready: bool, reason: str = "") -> None:
        """Set the node's Ready condition (the node_not_ready fault; a NotReady node gets no new pods)."""
        with self._mutation():
            node = self._find("nodes", "", name)
            was_ready = condition_true(node, "Ready")
            if ready:
                set_condition(
                    node,
                    "Ready",
                    "True",
                    reason or "KubeletReady",
                    "kubelet is posting ready status",
                    self._clock(),
                )
            else:
                set_condition(
                    node,
                    "Ready",
                    "Unknown" if reason == "NodeStatusUnknown" else "False",
                    reason or "KubeletNotReady",
                    reason or "kubelet stopped posting node status",
                    self._clock(),
                )
            self._put("nodes", node)
            if was_ready and not ready:
                self._record(
                    node,
                    "NodeNotReady",
                    f"Node {name} status is now: NodeNotReady",
                    warning=True,
                    component="node-controller",
                )
            elif ready and not was_ready:
                self._record(node, "NodeReady", f"Node {name} status is now: NodeReady")
            self._reconcile()

    def node_schedulable(self, name: str) -> bool:
        with self._lock:
            return not self._find("nodes", "", name).get("spec", {}).get("unschedulable", False)

    def set_gpu_healthy(self, node: str, gpu: int, healthy: bool) -> None:
        """The device plugin's view of one GPU: an unhealthy GPU leaves allocatable and gets no new pods."""
        with self._mutation():
            obj = self._find("nodes", "", node)
            if healthy:
                self._unhealthy_gpus.discard((node, gpu))
            else:
                self._unhealthy_gpus.add((node, gpu))
            self._set_allocatable(obj)

    def _set_allocatable(self, obj: dict[str, Any]) -> None:
        """The device plugin lists the node's GPUs but those it marked unhealthy and those fenced off."""
        node = obj["metadata"]["name"]
        total = int(obj["status"]["capacity"][GPU_RESOURCE])
        bad = {g for (n, g) in self._unhealthy_gpus | self._fenced_gpus if n == node and g < total}
        obj["status"]["allocatable"][GPU_RESOURCE] = str(total - len(bad))
        self._put("nodes", obj)

    def fenced_gpus(self, node: str) -> list[int]:
        """The node's GPUs in the driver's drain state (fenced off by a GPUFence)."""
        with self._lock:
            return sorted(g for (n, g) in self._fenced_gpus if n == node)

    def fail_pod(self, namespace: str, name: str, reason: str) -> None:
        """Kill a pod (OOMKilled, XID 79...): it turns Failed, frees its GPUs, its controller replaces it."""
        with self._mutation():
            pod = self._find("pods", namespace, name)
            if pod.get("status", {}).get("phase") in ("Failed", "Succeeded"):
                return
            was_running = pod_running(pod)
            self._set_pod_terminated(pod, "Failed", reason)
            self._put("pods", pod)
            self._pod_start_at.pop((namespace, name), None)
            if was_running:
                self._emit_pod_stopped(pod, reason)
            self._record(pod, reason, f"pod {namespace}/{name} failed: {reason}", warning=True)
            if controller_of(pod):
                self._remove("pods", (namespace, name))
            self._reconcile()

    def evict(self, namespace: str, name: str, grace_seconds: int | None = None) -> dict[str, Any]:
        """The policy/v1 Eviction: delete the pod unless a PodDisruptionBudget forbids it.

        Raises DisruptionBudgetBlocked (HTTP 429) when the budget allows no disruption now.
        """
        with self._mutation():
            pod = self._find("pods", namespace, name)
            if "deletionTimestamp" in pod["metadata"]:
                return clone(pod)
            budgets = [
                pdb
                for (ns, _), pdb in self._store["poddisruptionbudgets"].items()
                if ns == namespace
                and label_selector_matches(pdb.get("spec", {}).get("selector"), labels_of(pod))
            ]
            if len(budgets) > 1:
                raise Invalid(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource "
                    "does not support.",
                    kind="pods",
                    name=name,
                )
            if budgets:
                self._check_budget(budgets[0], pod)
            result = self._delete_pod(namespace, name, grace_seconds, reason="Evicted")
            self._reconcile()
            return clone(result)

    def _check_budget(self, pdb: dict[str, Any], pod: dict[str, Any]) -> None:
        """Raise DisruptionBudgetBlocked unless the budget allows evicting this pod now.

        A ready pod needs a disruption to spare. An unready pod may go while the budget is healthy
        (policy/v1's default `unhealthyPodEvictionPolicy: IfHealthyBudget`), or always with `AlwaysAllow`.
        """
        self._update_pdb_status(pdb)
        status = pdb["status"]
        if pod_ready(pod):
            allowed = status["disruptionsAllowed"] > 0
        else:
            policy = pdb.get("spec", {}).get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
            allowed = policy == "AlwaysAllow" or status["currentHealthy"] >= status["desiredHealthy"]
        if not allowed:
            raise DisruptionBudgetBlocked(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                kind="pods",
                name=pod["metadata"]["name"],
            )

    def set_scale(self, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        """Set a Deployment's replicas (the scale subresource); pods are created or removed to match."""
        if replicas < 0:
            raise Invalid(
                f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0",
                kind="deployments",
                name=name,
            )

        def change(dep: dict[str, Any]) -> dict[str, Any]:
            dep["spec"]["replicas"] = replicas
            return dep

        return self.update_object("deployments", namespace, name, change)

    def tick(self, now: float) -> None:
        """Advance time-based transitions up to `now`.

        Graceful terminations, reboots, GPU resets, checkpoints, scheduling and pod starts.
        """
        with self._mutation():
            self._finish_terminations(now)
            self._advance_node_requests(now)
            self._advance_host_reboots(now)
            self._answer_checkpoints(now)
            self._reconcile()
            self._schedule(start_now=False)
            self._start_pods(now)
            self._reconcile()

    def subscribe(self, listener: Callable[[KubeEvent], None]) -> None:
        """Call `listener` with every KubeEvent, after the change is visible in the state."""
        with self._lock:
            self._listeners.append(listener)

    # ------------------------------------------------------------------ pods

    def _create_pod(self, pod: dict[str, Any], *, start_now: bool) -> dict[str, Any]:
        spec = pod.setdefault("spec", {})
        containers = spec.setdefault("containers", [])
        if not containers:
            containers.append({"name": "main"})
        for container in containers:
            container.setdefault("image", "busybox:1.36")
            for kind in ("limits", "requests"):
                quantities = (container.get("resources") or {}).get(kind)
                if quantities:  # the API server keeps quantities as strings
                    container["resources"][kind] = {k: str(v) for k, v in quantities.items()}
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", self.default_grace_seconds)
        pod["status"] = {"phase": "Pending", "conditions": [], "qosClass": "BestEffort"}
        stored = self._put("pods", pod, create=True)
        node = spec.get("nodeName")
        if node:
            self._find("nodes", "", node)
            if not pod_gpus(stored) and pod_gpu_request(stored):
                free = self._free_gpus(node)
                need = pod_gpu_request(stored)
                if len(free) < need:
                    raise Invalid(
                        f"node {node} has {len(free)} free GPUs, pod {meta(stored)['name']} needs {need}"
                    )
                meta(stored).setdefault("annotations", {})[GPU_ANNOTATION] = ",".join(map(str, free[:need]))
            self._bind(stored, node, start_now=start_now)
        return stored

    def _bind(self, pod: dict[str, Any], node: str, *, start_now: bool) -> None:
        pod["spec"]["nodeName"] = node
        set_condition(pod, "PodScheduled", "True", "", "", self._clock())
        md = pod["metadata"]
        self._record(
            pod,
            "Scheduled",
            f"Successfully assigned {md['namespace']}/{md['name']} to {node}",
            component="default-scheduler",
        )
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if start_now:
            self._start_pod(pod)
        else:
            pod["status"]["containerStatuses"] = [
                {
                    "name": c.get("name", ""),
                    "ready": False,
                    "restartCount": 0,
                    "image": c.get("image", ""),
                    "imageID": "",
                    "started": False,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }
                for c in pod["spec"]["containers"]
            ]
            self._pod_start_at[key] = self._clock() + self._start_seconds(pod)
        self._put("pods", pod)

    def _start_seconds(self, pod: dict[str, Any]) -> float:
        """How long the pod's containers take to become Ready: its `sim.gpuops.io/start-seconds` annotation (an
        inference server loading its model), else `pod_start_seconds`; `start_seconds_of` decides first."""
        chosen = self.start_seconds_of(pod) if self.start_seconds_of is not None else None
        if chosen is not None:
            return max(0.0, chosen)
        try:
            return max(0.0, float(annotations_of(pod)[START_SECONDS_ANNOTATION]))
        except (KeyError, ValueError):
            return self.pod_start_seconds

    def _start_pod(self, pod: dict[str, Any]) -> None:
        now = self._clock()
        status = pod["status"]
        status["phase"] = "Running"
        status["startTime"] = rfc3339(now)
        status["hostIP"] = "10.0.0.1"
        status["podIP"] = f"10.244.{self._rv % 250}.{(self._rv // 250) % 250 + 1}"
        status["containerStatuses"] = [
            {
                "name": c.get("name", ""),
                "ready": True,
                "restartCount": 0,
                "image": c.get("image", ""),
                "imageID": f"{c.get('image', '')}@sha256:{'0' * 64}",
                "containerID": f"containerd://{uuid.uuid4().hex}",
                "started": True,
                "state": {"running": {"startedAt": rfc3339(now)}},
            }
            for c in pod["spec"]["containers"]
        ]
        for ctype in ("Initialized", "ContainersReady", "Ready"):
            set_condition(pod, ctype, "True", "", "", now)
        node = pod["spec"]["nodeName"]
        gpus = pod_gpus(pod)
        self._emit(
            KubeEvent(
                "pod_started",
                node,
                gpus[0] if len(gpus) == 1 else None,
                pod["metadata"]["name"],
                pod["metadata"]["namespace"],
                {"gpus": gpus, **self._workload_detail(pod)},
            )
        )

    def _workload_detail(self, pod: dict[str, Any]) -> dict[str, Any]:
        workload = labels_of(pod).get(WORKLOAD_LABEL)
        return {"workload": workload} if workload else {}

    def _emit_pod_stopped(self, pod: dict[str, Any], reason: str) -> None:
        gpus = pod_gpus(pod)
        self._emit(
            KubeEvent(
                "pod_stopped",
                pod["spec"].get("nodeName"),
                gpus[0] if len(gpus) == 1 else None,
                pod["metadata"]["name"],
                pod["metadata"]["namespace"],
                {"gpus": gpus, "reason": reason, **self._workload_detail(pod)},
            )
        )

    def _set_pod_terminated(self, pod: dict[str, Any], phase: str, reason: str) -> None:
        now = self._clock()
        pod["status"]["phase"] = phase
        pod["status"]["reason"] = reason
        for cs in pod["status"].get("containerStatuses") or []:
            cs["ready"] = False
            cs["state"] = {
                "terminated": {
                    "reason": reason,
                    "exitCode": 137 if phase == "Failed" else 0,
                    "finishedAt": rfc3339(now),
                }
            }
        for ctype in ("ContainersReady", "Ready"):
            set_condition(pod, ctype, "False", reason, "", now)

    def _delete_pod(
        self, namespace: str, name: str, grace_seconds: int | None, reason: str
    ) -> dict[str, Any]:
        pod = self._find("pods", namespace, name)
        grace = pod["spec"].get("terminationGracePeriodSeconds", self.default_grace_seconds)
        if grace_seconds is not None and grace_seconds >= 0:
            grace = grace_seconds
        running = pod_running(pod)
        if "deletionTimestamp" in pod["metadata"] and grace != 0:
            return pod
        if running:
            containers = ", ".join(c.get("name", "") for c in pod["spec"].get("containers") or [])
            self._record(pod, "Killing", f"Stopping container {containers} ({reason})")
        if not running or grace == 0:
            return self._remove_pod(pod, reason)
        pod["metadata"]["deletionTimestamp"] = rfc3339(self._clock() + grace)
        self._terminate_at[(namespace, name)] = self._clock() + grace  # the stamp has whole seconds only
        pod["metadata"]["deletionGracePeriodSeconds"] = grace
        pod["metadata"].setdefault("annotations", {})[TERMINATION_REASON] = reason
        set_condition(pod, "Ready", "False", "Terminating", "", self._clock())
        return self._put("pods", pod)

    def _remove_pod(self, pod: dict[str, Any], reason: str) -> dict[str, Any]:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if pod_running(pod):
            self._emit_pod_stopped(pod, reason)
        self._remove("pods", key)
        self._pod_start_at.pop(key, None)
        self._checkpoint_due.pop(key, None)
        self._terminate_at.pop(key, None)
        return pod

    def _finish_terminations(self, now: float) -> None:
        for key, at in list(self._terminate_at.items()):
            pod = self._store["pods"].get(key)
            if pod is None:
                del self._terminate_at[key]
            elif at <= now:
                del self._terminate_at[key]
                self._remove_pod(pod, annotations_of(pod).get(TERMINATION_REASON, "Deleted"))

    def _start_pods(self, now: float) -> None:
        for key, at in sorted(self._pod_start_at.items(), key=lambda kv: kv[1]):
            if at > now:
                continue
            pod = self._store["pods"].get(key)
            node = self._store["nodes"].get(("", pod["spec"].get("nodeName", ""))) if pod else None
            if node is not None and not condition_true(node, "Ready"):
                continue  # the kubelet is down: the containers start when it is back
            del self._pod_start_at[key]
            if pod is not None and pod["status"].get("phase") == "Pending":
                self._start_pod(pod)
                self._put("pods", pod)

    def _index_pod(self, key: Key, pod: dict[str, Any]) -> None:
        ref = controller_of(pod)
        owner = (str(ref.get("kind")), key[0], str(ref.get("name"))) if ref else None
        previous = self._owner_of.get(key)
        if previous == owner and key in self._owner_of:
            return
        if previous is not None:
            self._by_owner.get(previous, set()).discard(key)
        self._owner_of[key] = owner
        if owner is not None:
            self._by_owner.setdefault(owner, set()).add(key)

    def _mark_owner_dirty(self, key: Key) -> None:
        owner = self._owner_of.get(key)
        if owner is not None and owner[0] == "Deployment":
            self._dirty_deployments.add((owner[1], owner[2]))

    def _owned_pods(self, owner_kind: str, namespace: str, owner: str) -> list[dict[str, Any]]:
        keys = sorted(self._by_owner.get((owner_kind, namespace, owner), ()))
        return [self._store["pods"][k] for k in keys]

    # ------------------------------------------------------------------ scheduling

    def _held_gpus(self) -> dict[str, set[int]]:
        """GPU indices held on each node by its Pending or Running pods."""
        held: dict[str, set[int]] = {}
        for pod in self._store["pods"].values():
            node = pod["spec"].get("nodeName")
            if node and pod["status"].get("phase") in ("Pending", "Running"):
                held.setdefault(node, set()).update(pod_gpus(pod))
        return held

    def _free_gpus(self, node: str, held: dict[str, set[int]] | None = None) -> list[int]:
        obj = self._store["nodes"][("", node)]
        total = int(obj["status"]["capacity"].get(GPU_RESOURCE, "0"))
        taken = (held if held is not None else self._held_gpus()).get(node, set())
        return [g for g in range(total) if g not in taken and (node, g) not in self._unhealthy_gpus
                and (node, g) not in self._fenced_gpus]

    def _fits(self, pod: dict[str, Any], node: dict[str, Any]) -> bool:
        if not condition_true(node, "Ready") or node.get("spec", {}).get("unschedulable"):
            return False
        for taint in node.get("spec", {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(pod, taint):
                return False
        node_labels = labels_of(node)
        return all(node_labels.get(k) == v for k, v in (pod["spec"].get("nodeSelector") or {}).items())

    def _schedule(self, *, start_now: bool) -> None:
        """Bind pending pods to Ready, schedulable nodes with enough free GPUs (tightest fit first)."""
        pending = sorted(
            (
                p
                for p in self._store["pods"].values()
                if not p["spec"].get("nodeName")
                and p["status"].get("phase") == "Pending"
                and "deletionTimestamp" not in p["metadata"]
            ),
            key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]),
        )
        held = self._held_gpus() if pending else {}
        for pod in pending:
            need = pod_gpu_request(pod)
            best: tuple[int, str, list[int]] | None = None
            for (_, node_name), node in sorted(self._store["nodes"].items()):
                if not self._fits(pod, node):
                    continue
                free = self._free_gpus(node_name, held)
                if len(free) >= need and (best is None or len(free) < best[0]):
                    best = (len(free), node_name, free)
            if best is None:
                self._mark_unschedulable(pod, need)
                continue
            _, node_name, free = best
            if need:
                meta(pod).setdefault("annotations", {})[GPU_ANNOTATION] = ",".join(map(str, free[:need]))
                held.setdefault(node_name, set()).update(free[:need])
            self._bind(pod, node_name, start_now=start_now)

    def _mark_unschedulable(self, pod: dict[str, Any], need: int) -> None:
        message = (
            f"0/{len(self._store['nodes'])} nodes are available: no Ready, schedulable node has "
            f"{need} free {GPU_RESOURCE}."
        )
        for cond in pod["status"].get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("message") == message:
                return
        set_condition(pod, "PodScheduled", "False", "Unschedulable", message, self._clock())
        self._put("pods", pod)
        self._record(pod, "FailedScheduling", message, warning=True, component="default-scheduler")

    # ------------------------------------------------------------------ controllers

    def _reconcile(self) -> None:
        """Run the controllers; they only react to writes, so nothing to do when none happened since."""
        if self._rv == self._reconciled_rv:
            return
        dirty, self._dirty_deployments = self._dirty_deployments, set()
        for key in sorted(dirty):  # only Deployments whose spec or pods changed since
            dep = self._store["deployments"].get(key)
            if dep is not None:
                self._reconcile_deployment(dep)
        for ds in list(self._store["daemonsets"].values()):
            self._reconcile_daemonset(ds)
        for pdb in self._store["poddisruptionbudgets"].values():
            before = dict(pdb["status"])
            self._update_pdb_status(pdb)
            if pdb["status"] != before:
                self._put("poddisruptionbudgets", pdb)
        self._reconciled_rv = self._rv

    def _pod_from_template(self, owner: dict[str, Any], owner_kind: str, suffix: str) -> dict[str, Any]:
        template = clone(owner.get("spec", {}).get("template") or {})
        md = template.setdefault("metadata", {})
        md["name"] = f"{owner['metadata']['name']}-{suffix}"
        md["namespace"] = owner["metadata"]["namespace"]
        md.setdefault("labels", {})
        md["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner_kind,
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        template.setdefault("spec", {})
        return template

    def _reconcile_deployment(self, dep: dict[str, Any]) -> None:
        namespace, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        want = int(dep["spec"].get("replicas", 1))
        owned = self._owned_pods("Deployment", namespace, name)
        active = sorted(
            (p for p in owned if "deletionTimestamp" not in p["metadata"]),
            key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]),
        )
        for _ in range(want - len(active)):
            self._create_pod(
                self._pod_from_template(dep, "Deployment", replica_pod_suffix(
                    str(dep["metadata"].get("uid") or name), uuid.uuid4().bytes[:5])), start_now=False
            )
        if len(active) > want:
            # Like a ReplicaSet: remove unscheduled, then not-ready, then the lower pod-deletion-cost, then the
            # newest pods first (a stable sort on the earlier keys keeps the newest first among equals).
            newest_first = sorted(active, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]),
                                  reverse=True)
            victims = sorted(newest_first, key=lambda p: (bool(p["spec"].get("nodeName")), pod_ready(p),
                                                           _deletion_cost(p)))
            for pod in victims[: len(active) - want]:
                self._delete_pod(namespace, pod["metadata"]["name"], None, reason="ScaledDown")
        owned = self._owned_pods("Deployment", namespace, name)
        live = [p for p in owned if "deletionTimestamp" not in p["metadata"]]
        ready = sum(1 for p in live if pod_ready(p))
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(live),
            "updatedReplicas": len(live),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, want - ready),
        }
        if dep.get("status") != status:
            previous = dep.get("status", {}).get("replicas")
            dep["status"] = status
            self._put("deployments", dep)
            if previous is not None and previous != len(live):
                self._emit(
                    KubeEvent(
                        "deployment_scaled",
                        None,
                        namespace=namespace,
                        detail={"deployment": name, "replicas": len(live), "wanted": want},
                    )
                )

    def _reconcile_daemonset(self, ds: dict[str, Any]) -> None:
        namespace, name = ds["metadata"]["namespace"], ds["metadata"]["name"]
        have = {p["spec"].get("nodeName") for p in self._owned_pods("DaemonSet", namespace, name)}
        scheduled = 0
        for (_, node_name), node in sorted(self._store["nodes"].items()):
            if not condition_true(node, "Ready"):
                continue
            scheduled += 1
            if node_name in have:
                continue
            pod = self._pod_from_template(ds, "DaemonSet", node_name)
            pod["spec"]["nodeName"] = node_name
            self._create_pod(pod, start_now=True)
        status = {
            "desiredNumberScheduled": scheduled,
            "currentNumberScheduled": scheduled,
            "numberReady": scheduled,
            "numberAvailable": scheduled,
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        if ds.get("status") != status:
            ds["status"] = status
            self._put("daemonsets", ds)

    def _update_pdb_status(self, pdb: dict[str, Any]) -> None:
        namespace = pdb["metadata"]["namespace"]
        selector = pdb.get("spec", {}).get("selector")
        pods = [
            p
            for (ns, _), p in self._store["pods"].items()
            if ns == namespace
            and label_selector_matches(selector, labels_of(p))
            and "deletionTimestamp" not in p["metadata"]
        ]
        healthy = sum(1 for p in pods if pod_ready(p))
        expected = len(pods)
        for ref in {(r["kind"], r["name"]) for p in pods if (r := controller_of(p))}:
            if ref[0] == "Deployment":
                dep = self._store["deployments"].get((namespace, ref[1]))
                if dep is not None:
                    expected = max(expected, int(dep["spec"].get("replicas", 1)))
        spec = pdb.get("spec", {})
        if "minAvailable" in spec:
            desired = resolve_int_or_percent(spec["minAvailable"], expected, round_up=True)
        elif "maxUnavailable" in spec:
            desired = max(
                0, expected - resolve_int_or_percent(spec["maxUnavailable"], expected, round_up=True)
            )
        else:
            desired = expected
        pdb["status"] = {
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "disruptionsAllowed": max(0, healthy - desired),
            "observedGeneration": pdb["metadata"].get("generation", 1),
        }

    def _after_write(self, plural: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        if plural == "nodes":
            was = bool(before.get("spec", {}).get("unschedulable"))
            now_ = bool(after.get("spec", {}).get("unschedulable"))
            if was != now_:
                name = after["metadata"]["name"]
                reason = "NodeNotSchedulable" if now_ else "NodeSchedulable"
                self._record(after, reason, f"Node {name} status is now: {reason}")
                self._emit(
                    KubeEvent(
                        "node_cordoned" if now_ else "node_uncordoned",
                        after["metadata"]["name"],
                        detail={"annotations": annotations_of(after)},
                    )
                )
        elif plural == "pods":
            self._note_checkpoint_request(after)

    # ------------------------------------------------------------------ training-job checkpoints

    def _note_checkpoint_request(self, pod: dict[str, Any]) -> None:
        """A training pod asked to checkpoint answers CHECKPOINT_DONE after its checkpoint time."""
        notes = annotations_of(pod)
        requested = notes.get(CHECKPOINT_REQUESTED)
        seconds = notes.get(CHECKPOINT_SECONDS_ANNOTATION)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if not requested or seconds is None or notes.get(CHECKPOINT_DONE) == requested:
            return
        if self._checkpoint_due.get(key, ("",))[0] != requested:
            self._checkpoint_due[key] = (requested, self._clock() + float(seconds))

    def _answer_checkpoints(self, now: float) -> None:
        for key, (requested, due) in list(self._checkpoint_due.items()):
            pod = self._store["pods"].get(key)
            if pod is None:
                del self._checkpoint_due[key]
                continue
            if due > now or not pod_running(pod):
                continue
            del self._checkpoint_due[key]
            pod["metadata"].setdefault("annotations", {})[CHECKPOINT_DONE] = requested
            self._put("pods", pod)
            self._record(
                pod, "CheckpointDone", f"checkpoint written for request {requested}", component="training-job"
            )

    # ------------------------------------------------------------------ GPU resets and node reboots

    def _validate_request(self, plural: str, obj: dict[str, Any]) -> None:
        spec = obj.get("spec") or {}
        node = spec.get("nodeName")
        if not isinstance(node, str) or not node:
            raise Invalid(f"{BY_PLURAL[plural].kind} needs spec.nodeName", kind=plural)
        if plural in ("gpuresets", "gpufences") and (not isinstance(spec.get("gpu"), int) or spec["gpu"] < 0):
            raise Invalid(f"{BY_PLURAL[plural].kind} needs spec.gpu, a GPU index >= 0", kind=plural)
        if plural == "nodevalidations":
            level, gpus = spec.get("level", 2), spec.get("gpus", [])
            if not isinstance(level, int) or not 1 <= level <= 4:
                raise Invalid("NodeValidation spec.level is a dcgmi diag level, 1 to 4", kind=plural)
            if not isinstance(gpus, list) or not all(isinstance(g, int) and g >= 0 for g in gpus):
                raise Invalid("NodeValidation spec.gpus is a list of GPU indices", kind=plural)

    def _record_on_node(self, node_name: str, reason: str, message: str, *, warning: bool) -> None:
        node = self._store["nodes"].get(("", node_name))
        if node is not None:
            self._record(node, reason, message, warning=warning, component=AGENT)

    def _request_status(self, plural: str, obj: dict[str, Any], phase: str, message: str) -> None:
        if phase == "Failed" and plural == "gpuresets":
            self._record_on_node(obj["spec"]["nodeName"], "GPUResetFailed", message, warning=True)
        status = obj.setdefault("status", {})
        status["phase"] = phase
        status["message"] = message
        stamp = rfc3339(self._clock())
        if phase == "Running":
            status["startTime"] = stamp
        if phase in ("Succeeded", "Failed"):
            status["completionTime"] = stamp
        self._put(plural, obj)

    def _advance_node_requests(self, now: float) -> None:
        if self.external_node_agent:
            return
        for (_, name), req in sorted(self._store["gpuresets"].items()):
            phase = req["status"].get("phase")
            if phase == "Pending":
                self._begin_reset(name, req, now)
            elif phase == "Running" and self._reset_done_at.get(name, now) <= now:
                self._reset_done_at.pop(name, None)
                spec = req["spec"]
                self._request_status(
                    "gpuresets", req, "Succeeded", f"GPU {spec['gpu']} on {spec['nodeName']} reset"
                )
                self._emit(KubeEvent("gpu_reset", spec["nodeName"], spec["gpu"], detail={"request": name}))
                self._record_on_node(
                    spec["nodeName"], "GPUResetSucceeded", f"GPU {spec['gpu']} reset ({name})", warning=False
                )
        for _key, req in sorted(self._store["gpufences"].items()):
            if req["status"].get("phase") == "Pending":
                self._fence(req)
        for _key, req in sorted(self._store["nodevalidations"].items()):
            if req["status"].get("phase") == "Pending":
                self._validate_node(req)
        for (_, name), req in sorted(self._store["nodereboots"].items()):
            phase = req["status"].get("phase")
            if phase == "Pending":
                self._begin_reboot(name, req, now)
            elif phase == "Running" and self._reboot_done_at.get(name, now) <= now:
                self._reboot_done_at.pop(name, None)
                node_name = req["spec"]["nodeName"]
                self._request_status("nodereboots", req, "Succeeded", f"node {node_name} rebooted")
                self._node_back(node_name, name)

    def _gpu_refusal(self, node_name: str, gpu: int, doing: str) -> str:
        """Why the twin's node agent refuses to touch one GPU (no such node or GPU, the node not Ready, a pod on
        the GPU); empty when it may."""
        node = self._store["nodes"].get(("", node_name))
        if node is None:
            return f"node {node_name} not found"
        if gpu >= int(node["status"]["capacity"].get(GPU_RESOURCE, "0")):
            return f"node {node_name} has no GPU {gpu}"
        if not condition_true(node, "Ready"):
            return f"node {node_name} is not Ready; the node agent cannot run the {doing}"
        holder = self._gpu_holder(node_name, gpu)
        if holder:
            return (f"GPU {gpu} on {node_name} is in use by pod {holder}; drain the node or evict the pod before "
                    f"the {doing}")
        return ""

    def _begin_reset(self, name: str, req: dict[str, Any], now: float) -> None:
        node_name, gpu = req["spec"]["nodeName"], req["spec"]["gpu"]
        refusal = self._gpu_refusal(node_name, gpu, "reset")
        if refusal:
            self._request_status("gpuresets", req, "Failed", refusal)
            return
        self._reset_done_at[name] = now + self.gpu_reset_seconds
        self._request_status("gpuresets", req, "Running", f"nvidia-smi --gpu-reset -i {gpu} running")

    def _fence(self, req: dict[str, Any]) -> None:
        """The twin's own node agent on a GPUFence: the same refusals as a reset (no such node or GPU, not Ready,
        a pod on the GPU), then the GPU leaves the device plugin's list at once."""
        node_name, gpu = req["spec"]["nodeName"], req["spec"]["gpu"]
        refusal = self._gpu_refusal(node_name, gpu, "fence")
        if refusal:
            self._request_status("gpufences", req, "Failed", refusal)
            return
        self.fence_gpu(node_name, gpu, req["metadata"]["name"])
        self._request_status("gpufences", req, "Succeeded", f"GPU {gpu} on {node_name} drained; the device plugin "
                                                            "no longer lists it")

    def fence_gpu(self, node: str, gpu: int, why: str = "host") -> None:
        """`nvidia-smi drain -m 1` ran on the host and the device plugin listed the node's GPUs again: the GPU
        leaves allocatable until the node reboots."""
        with self._mutation():
            obj = self._find("nodes", "", node)
            self._fenced_gpus.add((node, gpu))
            self._set_allocatable(obj)
            self._emit(KubeEvent("gpu_fenced", node, gpu, detail={"request": why}))
            self._record(obj, "GPUFenced", f"GPU {gpu} fenced off ({why})", warning=True, component=AGENT)

    def unfence_gpu(self, node: str, gpu: int) -> None:
        """The GPU leaves the drain state (the host was powered off, its driver reloaded)."""
        with self._mutation():
            if (node, gpu) in self._fenced_gpus:
                self._fenced_gpus.discard((node, gpu))
                self._set_allocatable(self._find("nodes", "", node))

    def gpu_diagnostic(self, node: str, gpus: list[int] | None = None) -> list[dict[str, Any]]:
        """What DCGM diag would find on the node's GPUs: a GPU whose fault persists (the device plugin's unhealthy
        mark) fails its memory test; the others pass. One result per GPU, as `status.results` records them."""
        with self._lock:
            obj = self._store["nodes"].get(("", node))
            total = int(obj["status"]["capacity"].get(GPU_RESOURCE, "0")) if obj is not None else 0
            tested = [g for g in range(total) if not gpus or g in gpus]
            return [
                {"category": "Hardware", "test": "Memory", "gpu": g,
                 "result": "Fail" if (node, g) in self._unhealthy_gpus else "Pass"}
                | ({"message": f"GPU {g} failed the memory test"} if (node, g) in self._unhealthy_gpus else {})
                for g in tested
            ]

    def _validate_node(self, req: dict[str, Any]) -> None:
        """The twin's own stand-in for dcgmi diag, when no external agent runs."""
        spec = req["spec"]
        node = self._store["nodes"].get(("", spec["nodeName"]))
        if node is None:
            self._request_status("nodevalidations", req, "Failed", f"node {spec['nodeName']} not found")
            return
        results = self.gpu_diagnostic(spec["nodeName"], spec.get("gpus") or None)
        failed = [f"{r['test']} (GPU {r['gpu']})" for r in results if r["result"] == "Fail"]
        req["status"].update({"passed": not failed, "level": spec.get("level", 2), "results": results,
                              "failedTests": failed, "startTime": rfc3339(self._clock())})
        verdict = f"failed: {', '.join(failed)}" if failed else "passed"
        self._request_status("nodevalidations", req, "Succeeded", f"dcgmi diag -r {spec.get('level', 2)}: {verdict}")

    def _gpu_holder(self, node: str, gpu: int) -> str | None:
        for (ns, name), pod in self._store["pods"].items():
            if pod["spec"].get("nodeName") == node and pod_running(pod) and gpu in pod_gpus(pod):
                return f"{ns}/{name}"
        return None

    def _begin_reboot(self, name: str, req: dict[str, Any], now: float) -> None:
        node_name = req["spec"]["nodeName"]
        if ("", node_name) not in self._store["nodes"]:
            self._request_status("nodereboots", req, "Failed", f"node {node_name} not found")
            return
        self._node_down(node_name, name)
        self._reboot_done_at[name] = now + self.node_reboot_seconds
        self._request_status("nodereboots", req, "Running", f"node {node_name} rebooting")

    def _node_down(self, node_name: str, why: str) -> None:
        """The host goes down for a reboot: its kubelet stops posting, its pods are gone."""
        node = self._store["nodes"][("", node_name)]
        set_condition(
            node,
            "Ready",
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status (rebooting).",
            self._clock(),
        )
        self._put("nodes", node)
        self._record(node, "Rebooting", f"Node {node_name} will be rebooted ({why})", warning=True, component=AGENT)
        for pod in [p for p in self._store["pods"].values() if p["spec"].get("nodeName") == node_name]:
            self._remove_pod(pod, "NodeReboot")
        self._emit(KubeEvent("node_reboot_started", node_name, detail={"request": why}))

    def _node_back(self, node_name: str, why: str) -> None:
        """The host is up again: a new boot id, Ready."""
        node = self._store["nodes"].get(("", node_name))
        if node is not None:
            boot = int(node["status"]["nodeInfo"].get("bootID", "0")) + 1
            node["status"]["nodeInfo"]["bootID"] = str(boot)
            self._fenced_gpus = {(n, g) for (n, g) in self._fenced_gpus if n != node_name}  # the drain state is
            self._set_allocatable(node)  # the driver's, and a reboot reloads the driver
            set_condition(
                node, "Ready", "True", "KubeletReady", "kubelet is posting ready status", self._clock()
            )
            self._put("nodes", node)
            self._record(node, "Rebooted", f"Node {node_name} has been rebooted, boot id: {boot}", warning=True)
        self._emit(KubeEvent("node_rebooted", node_name, detail={"request": why}))

    # ------------------------------------------------------------------ the hosts (what a node agent's commands do)

    def host_reboot(self, node: str) -> None:
        """The node's host reboots (the node agent's reboot command): down now, back with a new boot id after
        `node_reboot_seconds`. NotFound for a node the twin does not have."""
        with self._mutation():
            self._find("nodes", "", node)
            if node not in self._host_reboot_at:
                self._node_down(node, "host reboot")
                self._host_reboot_at[node] = self._clock() + self.node_reboot_seconds

    def host_gpu_reset(self, node: str, gpu: int) -> None:
        """`nvidia-smi --gpu-reset` ran on the host: the physics hears `gpu_reset` (which clears what a reset
        clears)."""
        with self._mutation():
            self._find("nodes", "", node)
            self._emit(KubeEvent("gpu_reset", node, gpu, detail={"request": "host"}))
            self._record_on_node(node, "GPUResetSucceeded", f"GPU {gpu} reset (node agent)", warning=False)

    def host_gpus(self, node: str) -> dict[str, Any]:
        """What the host's nvidia-smi would see: each GPU's health (the device plugin's mark) and the pods on it,
        and the boot id. A GPU fenced off (the driver's drain state) is not listed."""
        with self._lock:
            obj = self._find("nodes", "", node)
            total = int(obj["status"]["capacity"].get(GPU_RESOURCE, "0"))
            held: dict[int, list[str]] = {}
            for (ns, name), pod in self._store["pods"].items():
                if pod["spec"].get("nodeName") == node and pod_running(pod):
                    for g in pod_gpus(pod):
                        held.setdefault(g, []).append(f"{ns}/{name}")
            up = node not in self._host_reboot_at
            return {
                "node": node,
                "bootID": obj["status"]["nodeInfo"].get("bootID", "0"),
                "gpus": [{"index": g, "healthy": up and (node, g) not in self._unhealthy_gpus,
                          "pods": held.get(g, []), **({"uuid": self.gpu_uuids[(node, g)]}
                                                      if (node, g) in self.gpu_uuids else {})}
                         for g in range(total) if (node, g) not in self._fenced_gpus],
            }

    def _advance_host_reboots(self, now: float) -> None:
        for node, due in sorted(self._host_reboot_at.items()):
            if due <= now:
                del self._host_reboot_at[node]
                self._node_back(node, "host reboot")
