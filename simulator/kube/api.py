"""The twin's Kubernetes-API-compatible HTTP surface (`/api`, `/apis`, `/version`) over a KubeState.

It serves the subset gpuops and kubectl use: discovery (legacy and aggregated), list/get/create/
replace/patch/delete of the served resources, field and label selectors, server-side Tables, the
pods/eviction, deployments/scale and status subresources, and watch on collections.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from simulator.kube import discovery
from simulator.kube.errors import BadRequest, Gone, KubeError, MethodNotAllowed, NotFound
from simulator.kube.patch import apply_patch
from simulator.kube.resources import Resource, resource_for
from simulator.kube.state import KubeState
from simulator.kube.tables import table, wants_table

SERVER_VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-gpuops-twin",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T00:00:00Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class Target:
    """What a resource path names: the resource, and optionally namespace, name and subresource."""

    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def _json(body: Any, status: int = 200, media_type: str = "application/json") -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type=media_type)


def _not_found_path(path: str) -> NotFound:
    return NotFound(f"the server could not find the requested resource ({path})")


def _parse_target(group: str, version: str, rest: list[str], path: str) -> Target:
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise _not_found_path(path)
    res = resource_for(group, version, rest[0])
    if res is None or (namespace is not None and not res.namespaced):
        raise _not_found_path(path)
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in res.subresources:
        raise _not_found_path(path)
    return Target(res, namespace, name, sub)


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc.msg} at position {exc.pos}") from exc


def _grace_seconds(request: Request, body: Any) -> int | None:
    text = request.query_params.get("gracePeriodSeconds")
    if text is not None:
        try:
            return int(text)
        except ValueError as exc:
            raise BadRequest(f"gracePeriodSeconds must be an integer, got {text!r}") from exc
    if isinstance(body, dict) and body.get("gracePeriodSeconds") is not None:
        return int(body["gracePeriodSeconds"])
    return None


class KubeApi:
    """Request handlers bound to one KubeState."""

    def __init__(self, state: KubeState) -> None:
        self.state = state

    # ---------------------------------------------------------------- discovery

    async def version(self, request: Request) -> Response:
        return _json(SERVER_VERSION)

    async def core_root(self, request: Request) -> Response:
        agg = discovery.wants_aggregated(request.headers.get("accept", ""))
        if agg:
            return self._aggregated(True, agg)
        return _json(discovery.api_versions())

    async def groups_root(self, request: Request) -> Response:
        agg = discovery.wants_aggregated(request.headers.get("accept", ""))
        if agg:
            return self._aggregated(False, agg)
        return _json(discovery.api_group_list())

    def _aggregated(self, core: bool, version: str) -> Response:
        media = f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
        return _json(discovery.aggregated(core, version), media_type=media)

    # ---------------------------------------------------------------- resources

    async def core(self, request: Request) -> Response:
        parts = [p for p in request.path_params["rest"].split("/") if p]
        if parts == ["v1"]:
            return self._resource_list("", "v1", request)
        if not parts or parts[0] != "v1":
            raise _not_found_path(request.url.path)
        return await self._dispatch(request, _parse_target("", "v1", parts[1:], request.url.path))

    async def groups(self, request: Request) -> Response:
        parts = [p for p in request.path_params["rest"].split("/") if p]
        if len(parts) == 1:
            group = discovery.api_group(parts[0])
            if group is None:
                raise _not_found_path(request.url.path)
            return _json(group)
        if len(parts) == 2:
            return self._resource_list(parts[0], parts[1], request)
        return await self._dispatch(request, _parse_target(parts[0], parts[1], parts[2:], request.url.path))

    def _resource_list(self, group: str, version: str, request: Request) -> Response:
        body = discovery.resource_list(group, version)
        if body is None:
            raise _not_found_path(request.url.path)
        return _json(body)

    async def _dispatch(self, request: Request, target: Target) -> Response:
        method = request.method
        if target.name is None:
            if method == "GET":
                return await self._list(request, target)
            if method == "POST":
                return await self._create(request, target)
            raise MethodNotAllowed(f"{method} is not supported on a collection")
        if target.subresource == "eviction":
            if method != "POST":
                raise MethodNotAllowed("the eviction subresource only supports POST")
            return await self._evict(request, target)
        if target.subresource == "scale":
            return await self._scale(request, target)
        if method == "GET":
            return self._get(request, target)
        if method == "PUT":
            return await self._replace(request, target)
        if method == "PATCH":
            return await self._patch(request, target)
        if method == "DELETE":
            return await self._delete(request, target)
        raise MethodNotAllowed(f"{method} is not supported on {target.resource.plural}/{target.name}")

    def _respond(
        self, request: Request, target: Target, items: list[dict[str, Any]], rv: str, single: bool
    ) -> Response:
        if wants_table(request.headers.get("accept", "")):
            return _json(
                table(target.resource.kind, items, rv, self.state.now()),
                media_type="application/json;as=Table;v=v1;g=meta.k8s.io",
            )
        if single:
            return _json(items[0])
        return _json(
            {
                "kind": f"{target.resource.kind}List",
                "apiVersion": target.resource.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    async def _list(self, request: Request, target: Target) -> Response:
        q = request.query_params
        if q.get("watch") in ("true", "1"):
            return self._watch(request, target)
        items, rv = self.state.list_objects(
            target.resource.plural, target.namespace, q.get("labelSelector"), q.get("fieldSelector")
        )
        return self._respond(request, target, items, rv, single=False)

    def _get(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        obj = self.state.get_object(target.resource.plural, target.namespace or "", target.name)
        return self._respond(request, target, [obj], obj["metadata"]["resourceVersion"], single=True)

    async def _create(self, request: Request, target: Target) -> Response:
        body = await _body(request)
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if target.resource.namespaced and target.namespace is None:
            raise MethodNotAllowed(
                f"create {target.resource.plural} in a namespace: "
                f"/namespaces/NAMESPACE/{target.resource.plural}"
            )
        if request.query_params.get("dryRun"):
            return _json(body, 201)
        created = self.state.create_object(target.resource.plural, target.namespace or "", body)
        return _json(created, 201)

    async def _replace(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        body = await _body(request)
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if body.get("metadata", {}).get("name", target.name) != target.name:
            raise BadRequest("the name of the object does not match the name in the URL")
        updated = self.state.update_object(
            target.resource.plural,
            target.namespace or "",
            target.name,
            lambda current: body,
            subresource=target.subresource or "",
        )
        return _json(updated)

    async def _patch(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        body = await _body(request)
        content_type = request.headers.get("content-type", "")
        updated = self.state.update_object(
            target.resource.plural,
            target.namespace or "",
            target.name,
            lambda current: apply_patch(current, body, content_type),
            subresource=target.subresource or "",
        )
        return _json(updated)

    async def _delete(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        body = await _body(request)
        uid = None
        if isinstance(body, dict):
            uid = (body.get("preconditions") or {}).get("uid")
        deleted = self.state.delete_object(
            target.resource.plural,
            target.namespace or "",
            target.name,
            _grace_seconds(request, body),
            precondition_uid=uid,
        )
        return _json(deleted)

    async def _evict(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        body = await _body(request)
        if not isinstance(body, dict):
            raise BadRequest("the eviction body must be a policy/v1 Eviction object")
        if body.get("metadata", {}).get("name", target.name) != target.name:
            raise BadRequest(f"name in URL does not match name in Eviction object ({target.name})")
        options = body.get("deleteOptions") or {}
        grace = options.get("gracePeriodSeconds")
        if not request.query_params.get("dryRun") and not options.get("dryRun"):
            self.state.evict(
                target.namespace or "default", target.name, int(grace) if grace is not None else None
            )
        return _json(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
        )

    async def _scale(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        namespace = target.namespace or "default"
        if request.method in ("PUT", "PATCH"):
            body = await _body(request)
            current = self._scale_of(self.state.get_object("deployments", namespace, target.name))
            wanted = (
                body
                if request.method == "PUT"
                else apply_patch(current, body, request.headers.get("content-type", ""))
            )
            replicas = (wanted.get("spec") or {}).get("replicas") if isinstance(wanted, dict) else None
            if not isinstance(replicas, int):
                raise BadRequest("a Scale needs spec.replicas, an integer")
            expected = (wanted.get("metadata") or {}).get("resourceVersion")

            def change(dep: dict[str, Any]) -> dict[str, Any]:
                dep["spec"]["replicas"] = replicas
                if expected:
                    dep["metadata"]["resourceVersion"] = expected
                return dep

            if replicas < 0:
                self.state.set_scale(namespace, target.name, replicas)  # raises Invalid
            self.state.update_object("deployments", namespace, target.name, change)
        elif request.method != "GET":
            raise MethodNotAllowed("the scale subresource supports GET, PUT and PATCH")
        return _json(self._scale_of(self.state.get_object("deployments", namespace, target.name)))

    @staticmethod
    def _scale_of(dep: dict[str, Any]) -> dict[str, Any]:
        md = dep["metadata"]
        selector = dep.get("spec", {}).get("selector") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: md[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in md
            },
            "spec": {"replicas": dep["spec"].get("replicas", 1)},
            "status": {
                "replicas": dep.get("status", {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()),
            },
        }

    # ---------------------------------------------------------------- watch

    def _watch(self, request: Request, target: Target) -> Response:
        """Stream ADDED / MODIFIED / DELETED events from the state's change log, from a resourceVersion on."""
        q = request.query_params
        try:
            timeout = float(q.get("timeoutSeconds", "1800"))
            since = q.get("resourceVersion") or "0"
            start = int(since)
        except ValueError as exc:
            raise BadRequest("timeoutSeconds must be a number and resourceVersion an integer") from exc
        state, plural = self.state, target.resource.plural
        matches = state.object_filter(target.namespace, q.get("labelSelector"), q.get("fieldSelector"))
        initial: list[tuple[str, dict[str, Any]]] = []
        if start == 0 or q.get("sendInitialEvents") == "true":
            items, rv = state.list_objects(
                plural, target.namespace, q.get("labelSelector"), q.get("fieldSelector")
            )
            initial, start = [("ADDED", obj) for obj in items], int(rv)
        else:
            state.changes_since(plural, start)  # Gone (410) before the stream starts when too old
        as_table = wants_table(request.headers.get("accept", ""))
        kind, now_ = target.resource.kind, state.now
        columns_sent = False

        def line(event: str, obj: dict[str, Any]) -> bytes:
            nonlocal columns_sent
            if as_table:
                body = table(kind, [obj], obj["metadata"].get("resourceVersion", ""), now_())
                if columns_sent:  # like the API server: column definitions only in the first event
                    body["columnDefinitions"] = []
                columns_sent = True
                obj = body
            return _event_line(event, obj)

        async def stream() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + min(timeout, 1800.0)
            last = start
            for event, obj in initial:
                yield line(event, obj)
            while loop.time() < deadline:
                if await request.is_disconnected():
                    return
                try:
                    changes, last = state.changes_since(plural, last)
                except Gone as exc:
                    yield _event_line("ERROR", exc.status())
                    return
                for event, obj in changes:
                    if matches(obj):
                        yield line(event, obj)
                await asyncio.sleep(0.05)

        return StreamingResponse(stream(), media_type="application/json")


def _event_line(kind: str, obj: dict[str, Any]) -> bytes:
    return (json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n").encode()


async def _kube_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KubeError)
    body = exc.status()
    return JSONResponse(body, status_code=exc.code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """An unexpected failure still answers with a Status clients can read (the server logs it too)."""
    body = KubeError(f"internal error in the twin's API server: {type(exc).__name__}: {exc}").status()
    return JSONResponse(body, status_code=500)


def host_routes(state: KubeState) -> list[Route]:
    """The nodes' hosts, for a node agent's programs in tests and demos (not Kubernetes): what nvidia-smi and
    dcgmi would see (`GET /sim/nodes/NODE/gpus`), a GPU reset (`POST .../gpus/N/reset`), a GPU put in the driver's
    drain state with the device plugin restarted (`POST .../gpus/N/fence`), a host reboot
    (`POST /sim/nodes/NODE/reboot`)."""

    async def gpus(request: Request) -> Response:
        return _json(state.host_gpus(request.path_params["node"]))

    async def reset(request: Request) -> Response:
        node, gpu = request.path_params["node"], int(request.path_params["gpu"])
        state.host_gpu_reset(node, gpu)
        return _json({"node": node, "gpu": gpu, "reset": True})

    async def fence(request: Request) -> Response:
        node, gpu = request.path_params["node"], int(request.path_params["gpu"])
        state.fence_gpu(node, gpu)
        return _json({"node": node, "gpu": gpu, "fenced": True})

    async def reboot(request: Request) -> Response:
        node = request.path_params["node"]
        state.host_reboot(node)
        return _json({"node": node, "rebooting": True})

    return [
        Route("/sim/nodes/{node}/gpus", gpus, methods=["GET"]),
        Route("/sim/nodes/{node}/gpus/{gpu:int}/reset", reset, methods=["POST"]),
        Route("/sim/nodes/{node}/gpus/{gpu:int}/fence", fence, methods=["POST"]),
        Route("/sim/nodes/{node}/reboot", reboot, methods=["POST"]),
    ]


def build_app(state: KubeState) -> Starlette:
    """The ASGI app serving `/version`, `/api` and `/apis` (and everything below them) for `state`, and the
    hosts' `/sim/nodes/...`."""
    api = KubeApi(state)
    routes = [
        *host_routes(state),
        Route("/version", api.version, methods=["GET"]),
        Route("/api", api.core_root, methods=["GET"]),
        Route("/api/{rest:path}", api.core, methods=METHODS),
        Route("/apis", api.groups_root, methods=["GET"]),
        Route("/apis/{rest:path}", api.groups, methods=METHODS),
    ]
    return Starlette(routes=routes, exception_handlers={KubeError: _kube_error, Exception: _internal_error})
