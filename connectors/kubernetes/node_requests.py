"""The node agent's view of its requests (GPUReset, NodeReboot, NodeValidation; runbooks/NODE_AGENT.md): list and
watch those for one node, write their status subresource with an optimistic lock, read the node's boot id.

`NodeRequestsPort` is the interface; `KubernetesNodeRequests` the real adapter over the official client (the
same connection as `KubernetesCluster`), with the vendor's errors translated into `connectors.kubernetes.errors`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from connectors.kubernetes import annotations as notes
from connectors.kubernetes.adapter import MERGE_PATCH, _boundary
from connectors.kubernetes.errors import ClusterError, Conflict, MalformedResponse, NotFound

KINDS = tuple(notes.REQUEST_PLURALS)
FINAL_PHASES = ("Succeeded", "Failed")
PHASE_ORDER = {"Pending": 0, "Running": 1, "Succeeded": 2, "Failed": 2}


class WatchExpired(ClusterError):
    """The watch's resourceVersion is older than the API server keeps (410 Gone): list again."""


@dataclass(frozen=True)
class RequestObject:
    """One request as stored: its kind, name, spec and status, and the resourceVersion it was read at."""

    kind: str
    name: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    resource_version: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return str(self.spec.get("nodeName") or "")

    @property
    def phase(self) -> str:
        """Pending until the agent wrote another phase (a new object has no status)."""
        return str(self.status.get("phase") or "Pending")

    @property
    def finished(self) -> bool:
        return self.phase in FINAL_PHASES


def request_object(kind: str, obj: object) -> RequestObject:
    """A RequestObject from the API's JSON dict."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        raise MalformedResponse(f"the API server returned a malformed {kind}: {obj!r:.200}")
    md = obj["metadata"]
    return RequestObject(
        kind=kind,
        name=str(md.get("name", "")),
        spec=dict(obj.get("spec") or {}),
        status=dict(obj.get("status") or {}),
        resource_version=str(md.get("resourceVersion", "")),
        labels=dict(md.get("labels") or {}),
    )


class NodeRequestsPort(Protocol):
    """What the node agent asks of the API server; every error is a ClusterError."""

    def list_requests(self, kind: str, node: str) -> tuple[list[RequestObject], str]:
        """The node's requests of `kind` (a field selector on spec.nodeName) and the list's resourceVersion."""
        ...

    def watch_requests(
        self, kind: str, node: str, resource_version: str, timeout_s: float
    ) -> Iterator[tuple[str, RequestObject]]:
        """(event type, request) after `resource_version`, until `timeout_s`; WatchExpired on 410."""
        ...

    def get_request(self, kind: str, name: str) -> RequestObject: ...

    def write_status(
        self, kind: str, name: str, status: Mapping[str, Any], *, resource_version: str | None = None
    ) -> RequestObject:
        """Merge `status` into the status subresource; with `resource_version`, Conflict unless it is current."""
        ...

    def boot_id(self, node: str) -> str:
        """The node's status.nodeInfo.bootID, as its kubelet reports it."""
        ...


Selector = Literal["field", "label"]


def node_selector(node: str, selector: Selector = "field") -> dict[str, Any]:
    """The list/watch argument that picks the node's requests: a field selector on spec.nodeName (the CRDs'
    selectableFields, Kubernetes 1.31+), or the gpuops.io/node label gpuops puts on each request."""
    if selector == "label":
        return {"label_selector": f"{notes.NODE_LABEL}={node}"}
    return {"field_selector": f"spec.nodeName={node}"}


class KubernetesNodeRequests:
    """NodeRequestsPort over the official client."""

    def __init__(self, api_client: client.ApiClient, *, request_timeout: float = 10.0,
                 selector: Selector = "field") -> None:
        self._api = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._timeout = request_timeout
        self._selector: Selector = selector

    def _plural(self, kind: str) -> str:
        return notes.REQUEST_PLURALS[kind]

    def list_requests(self, kind: str, node: str) -> tuple[list[RequestObject], str]:
        with _boundary(f"list {kind} requests for node {node}"):
            body: Any = self._custom.list_cluster_custom_object(
                notes.REQUEST_GROUP,
                notes.REQUEST_VERSION,
                self._plural(kind),
                **node_selector(node, self._selector),
                _request_timeout=self._timeout,
            )
            items = [request_object(kind, item) for item in body.get("items") or []]
            return items, str((body.get("metadata") or {}).get("resourceVersion", ""))

    def watch_requests(
        self, kind: str, node: str, resource_version: str, timeout_s: float
    ) -> Iterator[tuple[str, RequestObject]]:
        stream = watch.Watch()  # type: ignore[no-untyped-call,unused-ignore]
        try:
            with _boundary(f"watch {kind} requests for node {node}"):
                for event in stream.stream(  # type: ignore[no-untyped-call,unused-ignore]
                    self._custom.list_cluster_custom_object,
                    notes.REQUEST_GROUP,
                    notes.REQUEST_VERSION,
                    self._plural(kind),
                    **node_selector(node, self._selector),
                    resource_version=resource_version,
                    timeout_seconds=max(1, int(timeout_s)),
                    _request_timeout=timeout_s + self._timeout,
                ):
                    yield str(event["type"]), request_object(kind, event["object"])
        except ClusterError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiException) and cause.status == 410:
                raise WatchExpired(f"watch {kind} from resourceVersion {resource_version}: expired") from cause
            raise
        finally:
            stream.stop()  # type: ignore[no-untyped-call,unused-ignore]

    def get_request(self, kind: str, name: str) -> RequestObject:
        with _boundary(f"read {kind} {name}"):
            obj = self._custom.get_cluster_custom_object(
                notes.REQUEST_GROUP, notes.REQUEST_VERSION, self._plural(kind), name, _request_timeout=self._timeout
            )
            return request_object(kind, obj)

    def write_status(
        self, kind: str, name: str, status: Mapping[str, Any], *, resource_version: str | None = None
    ) -> RequestObject:
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        with _boundary(f"write the status of {kind} {name}"):
            obj = self._custom.patch_cluster_custom_object_status(
                notes.REQUEST_GROUP,
                notes.REQUEST_VERSION,
                self._plural(kind),
                name,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=self._timeout,
            )
        return request_object(kind, obj)

    def boot_id(self, node: str) -> str:
        with _boundary(f"read node {node}"):
            obj = self._core.read_node(node, _request_timeout=self._timeout)
            info = obj.status.node_info if obj.status is not None else None
            return str(getattr(info, "boot_id", "") or "")


class InMemoryNodeRequests:
    """NodeRequestsPort over dicts, for tests: a resourceVersion per write, 409 on a stale one, a change log that
    watches replay (and 410 once `expire_before` passes a watch's version)."""

    def __init__(self, boot_ids: Mapping[str, str] | None = None) -> None:
        self.boot_ids = dict(boot_ids or {})
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.log: list[tuple[int, str, dict[str, Any]]] = []
        self.version = 0
        self.expire_before = 0

    def _store(self, kind: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any],
               event: str) -> RequestObject:
        self.version += 1
        obj = {"metadata": {"name": name, "resourceVersion": str(self.version)}, "spec": dict(spec),
               "status": dict(status)}
        self.objects[(kind, name)] = obj
        self.log.append((self.version, event, {"kind": kind, **obj}))
        return request_object(kind, obj)

    def add(self, kind: str, name: str, **spec: Any) -> RequestObject:
        """Create a request, Pending, as gpuops would."""
        return self._store(kind, name, spec, {}, "ADDED")

    def list_requests(self, kind: str, node: str) -> tuple[list[RequestObject], str]:
        items = [request_object(k, o) for (k, _), o in sorted(self.objects.items())
                 if k == kind and o["spec"].get("nodeName") == node]
        return items, str(self.version)

    def watch_requests(
        self, kind: str, node: str, resource_version: str, timeout_s: float
    ) -> Iterator[tuple[str, RequestObject]]:
        since = int(resource_version or 0)
        if since < self.expire_before:
            raise WatchExpired(f"watch {kind} from resourceVersion {since}: expired")
        for version, event, obj in list(self.log):
            if version > since and obj["kind"] == kind and obj["spec"].get("nodeName") == node:
                yield event, request_object(kind, obj)

    def get_request(self, kind: str, name: str) -> RequestObject:
        if (kind, name) not in self.objects:
            raise NotFound(f"{kind} {name} not found")
        return request_object(kind, self.objects[(kind, name)])

    def write_status(
        self, kind: str, name: str, status: Mapping[str, Any], *, resource_version: str | None = None
    ) -> RequestObject:
        current = self.objects.get((kind, name))
        if current is None:
            raise NotFound(f"{kind} {name} not found")
        if resource_version and resource_version != current["metadata"]["resourceVersion"]:
            raise Conflict(f"{kind} {name} changed (resourceVersion {resource_version} is stale)")
        return self._store(kind, name, current["spec"], {**current["status"], **status}, "MODIFIED")

    def boot_id(self, node: str) -> str:
        return self.boot_ids.get(node, "")
