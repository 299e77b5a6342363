"""The real ClusterPort: the official `kubernetes` Python client against an API server.

Vendor errors (ApiException, urllib3 connection errors, config errors) are translated here, and
only here, into `connectors.kubernetes.errors`; results come back as the dataclasses of `models`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from connectors.kubernetes import annotations as notes
from connectors.kubernetes.errors import (
    AccessDenied,
    AlreadyExists,
    ClusterError,
    ClusterNotConfigured,
    ClusterUnavailable,
    Conflict,
    DisruptionBlocked,
    InvalidRequest,
    MalformedResponse,
    NotCordonedByGpuops,
    NotFound,
)
from connectors.kubernetes.models import (
    DELETION_COST_ANNOTATION,
    SPARED_ANNOTATION,
    DeploymentScale,
    EventType,
    EvictionOutcome,
    NodeCondition,
    NodeInfo,
    NodeRequest,
    NodeValidation,
    PodInfo,
    ReplicaStart,
    RequestPhase,
    ServedDeployment,
    Taint,
)
from connectors.kubernetes.port import request_suffix, retry_while_blocked

MERGE_PATCH = "application/merge-patch+json"
_PHASES: dict[str, RequestPhase] = {p: p for p in ("Pending", "Running", "Succeeded", "Failed")}


def _status_message(exc: ApiException) -> tuple[str, str]:
    """The API server's Status message and cause reasons (or the raw reason when the body is not a Status)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.reason or ""), ""
    if not isinstance(body, dict):
        return str(exc.reason or ""), ""
    causes = ",".join(str(c.get("reason", "")) for c in (body.get("details") or {}).get("causes") or [])
    return str(body.get("message") or exc.reason or ""), causes + "|" + str(body.get("reason", ""))


def translate(exc: Exception, action: str) -> ClusterError:
    """Our error for a vendor error raised while doing `action`."""
    if isinstance(exc, ApiException):
        message, reasons = _status_message(exc)
        status = int(exc.status or 0)
        text = f"{action}: {message or exc.reason} (HTTP {status})"
        if status == 404:
            return NotFound(f"{text}. It may have been deleted meanwhile; re-read the cluster state.")
        if status == 409:
            if "AlreadyExists" in reasons:
                return AlreadyExists(f"{text}.")
            return Conflict(f"{text}. The object changed meanwhile; re-read it and decide again.")
        if status == 429 and "DisruptionBudget" in reasons:
            return DisruptionBlocked(text)
        if status in (401, 403):
            return AccessDenied(
                f"{text}. Check the service account's RBAC rules or the kubeconfig credentials."
            )
        if status in (400, 415, 422):
            return InvalidRequest(f"{text}. The request was rejected as invalid; this is a bug to report.")
        return ClusterUnavailable(f"{text}. The API server is failing or throttling; retry later.")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return ClusterUnavailable(
            f"{action}: cannot reach the Kubernetes API server ({exc}). Check the API "
            "server URL and the network, then retry."
        )
    if isinstance(exc, ConfigException):
        return ClusterNotConfigured(
            f"{action}: no usable Kubernetes configuration ({exc}). Give an API server "
            "URL, a kubeconfig, or run in a cluster."
        )
    return ClusterError(f"{action}: {exc}")


@contextmanager
def _boundary(action: str) -> Iterator[None]:
    try:
        yield
    except ClusterError:
        raise
    except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException) as exc:
        raise translate(exc, action) from exc
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # The client's models reject a response that does not match the Kubernetes schema.
        raise MalformedResponse(
            f"{action}: the API server's answer could not be read ({exc!s:.300}). Check that the URL "
            "points at a Kubernetes API server."
        ) from exc


def _get(obj: Any, *path: str) -> Any:
    for attr in path:
        if obj is None:
            return None
        obj = obj.get(attr) if isinstance(obj, dict) else getattr(obj, attr, None)
    return obj


def node_info(node: Any) -> NodeInfo:
    """A NodeInfo from a V1Node."""
    status = node.status
    conditions = tuple(
        NodeCondition(
            type=c.type,
            status=c.status,
            reason=c.reason or "",
            message=c.message or "",
            last_transition=str(c.last_transition_time or ""),
        )
        for c in (_get(status, "conditions") or [])
    )
    taints = tuple(Taint(key=t.key, effect=t.effect, value=t.value or "") for t in (node.spec.taints or []))
    return NodeInfo(
        name=node.metadata.name,
        unschedulable=bool(node.spec.unschedulable),
        conditions=conditions,
        taints=taints,
        gpu_capacity=int((_get(status, "capacity") or {}).get(notes.GPU_RESOURCE, 0)),
        gpu_allocatable=int((_get(status, "allocatable") or {}).get(notes.GPU_RESOURCE, 0)),
        labels=dict(node.metadata.labels or {}),
        annotations=dict(node.metadata.annotations or {}),
        resource_version=node.metadata.resource_version or "",
    )


def _gpu_indices(annotations: Mapping[str, str]) -> tuple[int, ...]:
    text = annotations.get(notes.GPU_INDICES, "")
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        return ()


def pod_info(pod: Any) -> PodInfo:
    """A PodInfo from a V1Pod."""
    md, spec, status = pod.metadata, pod.spec, pod.status
    owner = next((r for r in (md.owner_references or []) if r.controller), None)
    annotations = dict(md.annotations or {})
    gpus = 0
    for container in spec.containers or []:
        limits = _get(container, "resources", "limits") or {}
        requests = _get(container, "resources", "requests") or {}
        gpus += int(limits.get(notes.GPU_RESOURCE, requests.get(notes.GPU_RESOURCE, 0)))
    ready = any(c.type == "Ready" and c.status == "True" for c in (_get(status, "conditions") or []))
    return PodInfo(
        namespace=md.namespace,
        name=md.name,
        node=spec.node_name,
        phase=_get(status, "phase") or "Unknown",
        ready=ready and md.deletion_timestamp is None,
        owner_kind=owner.kind if owner else None,
        owner_name=owner.name if owner else None,
        is_daemonset=bool(owner and owner.kind == "DaemonSet"),
        is_mirror=notes.MIRROR_POD in annotations,
        uses_empty_dir=any(v.empty_dir is not None for v in (spec.volumes or [])),
        terminating=md.deletion_timestamp is not None,
        gpu_count=gpus,
        gpu_indices=_gpu_indices(annotations),
        labels=dict(md.labels or {}),
        annotations=annotations,
        uid=md.uid or "",
    )


def served_deployment(dep: Any) -> ServedDeployment:
    """A ServedDeployment from a V1Deployment (GPUs per replica from its pod template's containers)."""
    md, spec = dep.metadata, dep.spec
    gpus = 0
    for container in _get(spec, "template", "spec", "containers") or []:
        limits = _get(container, "resources", "limits") or {}
        requests = _get(container, "resources", "requests") or {}
        gpus += int(limits.get(notes.GPU_RESOURCE, requests.get(notes.GPU_RESOURCE, 0)))
    return ServedDeployment(
        namespace=md.namespace,
        name=md.name,
        replicas=int(spec.replicas if spec.replicas is not None else 1),
        ready_replicas=int(_get(dep, "status", "ready_replicas") or 0),
        selector=dict(_get(spec, "selector", "match_labels") or {}),
        gpus_per_replica=gpus,
        labels=dict(md.labels or {}),
        annotations=dict(md.annotations or {}),
    )


def replica_start(pod: Any) -> ReplicaStart:
    """A ReplicaStart from a V1Pod: created, and Ready since its Ready condition turned True."""
    md = pod.metadata
    ready_at = None
    for c in _get(pod, "status", "conditions") or []:
        if c.type == "Ready" and c.status == "True" and c.last_transition_time is not None:
            ready_at = c.last_transition_time.timestamp()
    annotations = md.annotations or {}
    return ReplicaStart(name=md.name, uid=md.uid or "", created_at=md.creation_timestamp.timestamp(),
                        ready_at=ready_at, deletion_cost=annotations.get(DELETION_COST_ANNOTATION),
                        spared=SPARED_ANNOTATION in annotations)


def _gpu_spec(node: str, gpu: int, gpu_uuid: str | None) -> dict[str, Any]:
    """A GPUReset's or GPUFence's spec: the node, the GPU's index and, where known, its UUID."""
    return {"nodeName": node, "gpu": gpu, **({"uuid": gpu_uuid} if gpu_uuid else {})}


def node_request(obj: object) -> NodeRequest:
    """A NodeRequest from a GPUReset / GPUFence / NodeReboot custom object (a dict)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        raise InvalidRequest(f"the API server returned a malformed request object: {obj!r:.200}")
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    phase: RequestPhase = _PHASES.get(str(status.get("phase") or "Pending"), "Unknown")
    return NodeRequest(
        kind=obj["kind"] if obj.get("kind") in ("GPUReset", "GPUFence") else "NodeReboot",
        name=obj["metadata"]["name"],
        node=spec.get("nodeName", ""),
        gpu=spec.get("gpu"),
        phase=phase,
        message=status.get("message", ""),
        uuid=spec.get("uuid") if isinstance(spec.get("uuid"), str) else None,
    )


def node_validation(obj: object) -> NodeValidation:
    """A NodeValidation from its custom object (a dict)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        raise MalformedResponse(f"the API server returned a malformed NodeValidation: {obj!r:.200}")
    spec, status, md = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
    created = None
    stamp = md.get("creationTimestamp")
    if isinstance(stamp, str) and stamp:
        created = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    passed = status.get("passed")
    return NodeValidation(
        name=str(md.get("name", "")),
        node=str(spec.get("nodeName", "")),
        phase=_PHASES.get(str(status.get("phase") or "Pending"), "Unknown"),
        message=str(status.get("message", "")),
        passed=passed if isinstance(passed, bool) else None,
        failed_tests=tuple(str(t) for t in status.get("failedTests") or []),
        created_at=created,
    )


def _taint_body(taint: Taint) -> dict[str, str]:
    body = {"key": taint.key, "effect": taint.effect}
    if taint.value:
        body["value"] = taint.value
    return body


class KubernetesCluster:
    """ClusterPort over the official client. Build it with `connect()`; tests point it at the twin's URL."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        request_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._autoscaling = client.AutoscalingV2Api(api_client)
        self._timeout = request_timeout
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def connect(
        cls,
        *,
        api_url: str | None = None,
        token: str | None = None,
        verify_ssl: bool = True,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        request_timeout: float = 10.0,
    ) -> KubernetesCluster:
        """Configure from an API server URL (and bearer token), the in-cluster account, or a kubeconfig."""
        cfg = client.Configuration()
        with _boundary("load the Kubernetes configuration"):
            if in_cluster:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call,unused-ignore]
            elif api_url:
                cfg.host = api_url.rstrip("/")
                cfg.verify_ssl = verify_ssl
                if token:
                    cfg.api_key = {"authorization": token}
                    cfg.api_key_prefix = {"authorization": "Bearer"}
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call,unused-ignore]
                    config_file=kubeconfig, context=context, client_configuration=cfg
                )
        cfg.retries = 1
        return cls(client.ApiClient(cfg), request_timeout=request_timeout)

    @property
    def api_client(self) -> client.ApiClient:
        """The configured client, for other adapters on the same connection (the node agent's requests)."""
        return self._api

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call,unused-ignore]

    # ---------------------------------------------------------------- nodes

    def get_node(self, name: str) -> NodeInfo:
        with _boundary(f"read node {name}"):
            return node_info(self._core.read_node(name, _request_timeout=self._timeout))

    def list_nodes(self) -> list[NodeInfo]:
        with _boundary("list nodes"):
            return [node_info(n) for n in self._core.list_node(_request_timeout=self._timeout).items]

    def _patch_node(self, name: str, body: dict[str, Any], action: str) -> NodeInfo:
        with _boundary(action):
            node = self._core.patch_node(
                name, body, _content_type=MERGE_PATCH, _request_timeout=self._timeout
            )
            return node_info(node)

    def _with_fresh_node(self, name: str, change: Callable[[NodeInfo], NodeInfo | None]) -> NodeInfo:
        """Read the node and apply `change`; one retry when it changed under us (a 409)."""
        for attempt in (1, 2):
            current = self.get_node(name)
            try:
                return change(current) or current
            except Conflict:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def cordon(self, node: str, *, reason: str, incident: str | None = None) -> NodeInfo:
        def change(current: NodeInfo) -> NodeInfo | None:
            if current.unschedulable:
                return None  # already cordoned: by us (idempotent) or by someone else (stays theirs)
            meta = {
                "resourceVersion": current.resource_version,
                "annotations": {
                    notes.CORDONED_BY: notes.CORDON_OWNER,
                    notes.CORDON_REASON: reason,
                    notes.CORDON_INCIDENT: incident,
                },
            }
            return self._patch_node(
                node, {"metadata": meta, "spec": {"unschedulable": True}}, f"cordon {node}"
            )

        return self._with_fresh_node(node, change)

    def uncordon(self, node: str) -> NodeInfo:
        def change(current: NodeInfo) -> NodeInfo | None:
            ours = current.annotations.get(notes.CORDONED_BY) == notes.CORDON_OWNER
            if current.unschedulable and not ours:
                raise NotCordonedByGpuops(
                    f"node {node} was cordoned by someone else (no {notes.CORDONED_BY}={notes.CORDON_OWNER} "
                    "annotation); gpuops leaves it cordoned. Ask its owner to uncordon it."
                )
            if not current.unschedulable and not any(
                k in current.annotations for k in notes.CORDON_ANNOTATIONS
            ):
                return None
            meta = {
                "resourceVersion": current.resource_version,
                "annotations": dict.fromkeys(notes.CORDON_ANNOTATIONS),
            }
            return self._patch_node(
                node, {"metadata": meta, "spec": {"unschedulable": None}}, f"uncordon {node}"
            )

        return self._with_fresh_node(node, change)

    def add_taint(self, node: str, taint: Taint) -> NodeInfo:
        def change(current: NodeInfo) -> NodeInfo | None:
            if taint in current.taints:
                return None
            kept = [t for t in current.taints if (t.key, t.effect) != (taint.key, taint.effect)]
            return self._put_taints(node, current, [*kept, taint])

        return self._with_fresh_node(node, change)

    def remove_taint(self, node: str, key: str, effect: str | None = None) -> NodeInfo:
        def change(current: NodeInfo) -> NodeInfo | None:
            kept = [t for t in current.taints if not (t.key == key and effect in (None, t.effect))]
            if len(kept) == len(current.taints):
                return None
            return self._put_taints(node, current, kept)

        return self._with_fresh_node(node, change)

    def _put_taints(self, node: str, current: NodeInfo, taints: list[Taint]) -> NodeInfo:
        body = {
            "metadata": {"resourceVersion": current.resource_version},
            "spec": {"taints": [_taint_body(t) for t in taints]},
        }
        return self._patch_node(node, body, f"update taints of node {node}")

    # ---------------------------------------------------------------- pods

    def list_pods(self, node: str) -> list[PodInfo]:
        with _boundary(f"list pods on node {node}"):
            pods = self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", _request_timeout=self._timeout
            )
            return [pod_info(p) for p in pods.items]

    def list_unscheduled_pods(self) -> list[PodInfo]:
        with _boundary("list pods waiting for a node"):
            pods = self._core.list_pod_for_all_namespaces(
                field_selector="spec.nodeName=,status.phase=Pending", _request_timeout=self._timeout
            )
            return [pod_info(p) for p in pods.items]

    def get_pod(self, namespace: str, name: str) -> PodInfo:
        with _boundary(f"read pod {namespace}/{name}"):
            return pod_info(self._core.read_namespaced_pod(name, namespace, _request_timeout=self._timeout))

    def _evict_once(self, namespace: str, name: str, grace_period_s: int | None) -> EvictionOutcome:
        body = client.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            delete_options=client.V1DeleteOptions(grace_period_seconds=grace_period_s)
            if grace_period_s is not None
            else None,
        )
        try:
            with _boundary(f"evict pod {namespace}/{name}"):
                self._core.create_namespaced_pod_eviction(
                    name, namespace, body, _request_timeout=self._timeout
                )
        except NotFound:
            return "already_gone"
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
            lambda: self._evict_once(namespace, name, grace_period_s),
            deadline_s=deadline_s,
            retry_interval_s=retry_interval_s,
            what=f"evict pod {namespace}/{name}",
            clock=self._clock,
            sleep=self._sleep,
        )

    def delete_pod(self, namespace: str, name: str, *, grace_period_s: int | None = None) -> None:
        with _boundary(f"delete pod {namespace}/{name}"):
            self._core.delete_namespaced_pod(
                name, namespace, grace_period_seconds=grace_period_s, _request_timeout=self._timeout
            )

    def annotate_pod(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> PodInfo:
        with _boundary(f"annotate pod {namespace}/{name}"):
            pod = self._core.patch_namespaced_pod(
                name,
                namespace,
                {"metadata": {"annotations": dict(annotations)}},
                _content_type=MERGE_PATCH,
                _request_timeout=self._timeout,
            )
            return pod_info(pod)

    def request_checkpoint(self, namespace: str, name: str, request_id: str) -> PodInfo:
        return self.annotate_pod(namespace, name, {notes.CHECKPOINT_REQUESTED: request_id})

    # ---------------------------------------------------------------- deployments

    def get_scale(self, namespace: str, deployment: str) -> DeploymentScale:
        with _boundary(f"read the scale of deployment {namespace}/{deployment}"):
            scale = self._apps.read_namespaced_deployment_scale(
                deployment, namespace, _request_timeout=self._timeout
            )
            return DeploymentScale(
                namespace,
                deployment,
                int(_get(scale, "spec", "replicas") or 0),
                int(_get(scale, "status", "replicas") or 0),
            )

    def set_scale(self, namespace: str, deployment: str, replicas: int) -> DeploymentScale:
        if replicas < 0:
            raise InvalidRequest(
                f"scale deployment {namespace}/{deployment}: replicas must be >= 0, got {replicas}"
            )
        with _boundary(f"scale deployment {namespace}/{deployment} to {replicas}"):
            scale = self._apps.patch_namespaced_deployment_scale(
                deployment,
                namespace,
                {"spec": {"replicas": replicas}},
                _content_type=MERGE_PATCH,
                _request_timeout=self._timeout,
            )
            return DeploymentScale(
                namespace,
                deployment,
                int(_get(scale, "spec", "replicas") or 0),
                int(_get(scale, "status", "replicas") or 0),
            )

    # ---------------------------------------------------------------- the autoscaler's targets (ScalingTargets)

    def list_served_deployments(self, label_selector: str) -> list[ServedDeployment]:
        with _boundary(f"list deployments matching {label_selector!r}"):
            found = self._apps.list_deployment_for_all_namespaces(label_selector=label_selector,
                                                                  _request_timeout=self._timeout)
            return [served_deployment(d) for d in found.items]

    def get_served_deployment(self, namespace: str, name: str) -> ServedDeployment:
        with _boundary(f"read deployment {namespace}/{name}"):
            return served_deployment(self._apps.read_namespaced_deployment(name, namespace,
                                                                           _request_timeout=self._timeout))

    def list_replica_starts(self, namespace: str, selector: Mapping[str, str]) -> list[ReplicaStart]:
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        with _boundary(f"list pods of {namespace} matching {text!r}"):
            pods = self._core.list_namespaced_pod(namespace, label_selector=text, _request_timeout=self._timeout)
            return [replica_start(p) for p in pods.items if _get(p, "metadata", "deletion_timestamp") is None]

    def autoscaled_elsewhere(self) -> set[tuple[str, str]]:
        owned: set[tuple[str, str]] = set()
        with _boundary("list HorizontalPodAutoscalers"):
            for hpa in self._autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces(
                    _request_timeout=self._timeout).items:
                ref = hpa.spec.scale_target_ref
                if ref is not None and ref.kind == "Deployment":
                    owned.add((str(_get(hpa, "metadata", "namespace")), str(ref.name)))
        try:
            with _boundary("list KEDA ScaledObjects"):
                scaled = self._custom.list_cluster_custom_object("keda.sh", "v1alpha1", "scaledobjects",
                                                                 _request_timeout=self._timeout)
        except NotFound:  # KEDA is not installed
            return owned
        for obj in scaled.get("items") or [] if isinstance(scaled, dict) else []:
            target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
            if target.get("kind", "Deployment") == "Deployment" and target.get("name"):
                owned.add((str((obj.get("metadata") or {}).get("namespace", "")), str(target["name"])))
        return owned

    # ---------------------------------------------------------------- GPU resets and node reboots

    def _create_request(self, plural: str, kind: str, name: str, spec: dict[str, Any]) -> NodeRequest:
        body = {
            "apiVersion": f"{notes.REQUEST_GROUP}/{notes.REQUEST_VERSION}",
            "kind": kind,
            "metadata": {"name": name, "labels": {notes.NODE_LABEL: spec["nodeName"]}},
            "spec": spec,
        }
        try:
            with _boundary(f"create {kind} {name}"):
                created = self._custom.create_cluster_custom_object(
                    notes.REQUEST_GROUP, notes.REQUEST_VERSION, plural, body, _request_timeout=self._timeout
                )
                return node_request(created)
        except AlreadyExists:
            existing = self._get_request(plural, name)
            if (existing.node, existing.gpu) != (spec["nodeName"], spec.get("gpu")):
                raise AlreadyExists(
                    f"{kind} {name} exists for another target ({existing.node}, GPU "
                    f"{existing.gpu}); choose another request name."
                ) from None
            return existing

    def _get_request(self, plural: str, name: str) -> NodeRequest:
        with _boundary(f"read {plural} {name}"):
            obj = self._custom.get_cluster_custom_object(
                notes.REQUEST_GROUP, notes.REQUEST_VERSION, plural, name, _request_timeout=self._timeout
            )
            return node_request(obj)

    def request_gpu_reset(self, node: str, gpu: int, *, name: str | None = None,
                          uuid: str | None = None) -> NodeRequest:
        name = name or f"{node}-gpu{gpu}-{request_suffix()}"
        return self._create_request(notes.GPU_RESETS, "GPUReset", name, _gpu_spec(node, gpu, uuid))

    def get_gpu_reset(self, name: str) -> NodeRequest:
        return self._get_request(notes.GPU_RESETS, name)

    def request_gpu_fence(self, node: str, gpu: int, *, name: str | None = None,
                          uuid: str | None = None) -> NodeRequest:
        name = name or f"{node}-gpu{gpu}-{request_suffix()}"
        return self._create_request(notes.GPU_FENCES, "GPUFence", name, _gpu_spec(node, gpu, uuid))

    def get_gpu_fence(self, name: str) -> NodeRequest:
        return self._get_request(notes.GPU_FENCES, name)

    def request_node_reboot(self, node: str, *, name: str | None = None) -> NodeRequest:
        name = name or f"{node}-{request_suffix()}"
        return self._create_request(notes.NODE_REBOOTS, "NodeReboot", name, {"nodeName": node})

    def get_node_reboot(self, name: str) -> NodeRequest:
        return self._get_request(notes.NODE_REBOOTS, name)

    def request_node_validation(
        self, node: str, *, name: str, gpus: Sequence[int] = (), level: int = 2
    ) -> NodeValidation:
        spec: dict[str, Any] = {"nodeName": node, "level": level}
        if gpus:
            spec["gpus"] = list(gpus)
        body = {
            "apiVersion": f"{notes.REQUEST_GROUP}/{notes.REQUEST_VERSION}",
            "kind": "NodeValidation",
            "metadata": {"name": name, "labels": {notes.NODE_LABEL: node}},
            "spec": spec,
        }
        try:
            with _boundary(f"create NodeValidation {name}"):
                return node_validation(self._custom.create_cluster_custom_object(
                    notes.REQUEST_GROUP, notes.REQUEST_VERSION, notes.NODE_VALIDATIONS, body,
                    _request_timeout=self._timeout,
                ))
        except AlreadyExists:
            existing = self.get_node_validation(name)
            if existing.node != node:
                raise AlreadyExists(
                    f"NodeValidation {name} exists for node {existing.node}; choose another request name."
                ) from None
            return existing

    def get_node_validation(self, name: str) -> NodeValidation:
        with _boundary(f"read NodeValidation {name}"):
            return node_validation(self._custom.get_cluster_custom_object(
                notes.REQUEST_GROUP, notes.REQUEST_VERSION, notes.NODE_VALIDATIONS, name,
                _request_timeout=self._timeout,
            ))

    # ---------------------------------------------------------------- events

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
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"gpuops-{name}-", namespace=namespace),
            involved_object=client.V1ObjectReference(
                kind=kind, name=name, namespace=None if kind == "Node" else namespace
            ),
            reason=reason,
            message=message,
            type=type,
            source=client.V1EventSource(component="gpuops"),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        with _boundary(f"post event {reason} about {kind} {name}"):
            self._core.create_namespaced_event(namespace, event, _request_timeout=self._timeout)
