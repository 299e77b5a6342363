"""Discovery documents: the legacy ones (/api, /apis, /apis/G, resource lists) and aggregated discovery v2.

kubectl discovers the API before anything else. Current kubectl asks /api and /apis for the
aggregated `APIGroupDiscoveryList` first and falls back to the legacy documents when the answer's
content type says they are plain JSON; older kubectl and the Python client only use the legacy ones.
"""

from __future__ import annotations

from typing import Any

from simulator.kube.resources import RESOURCES, Resource, group_versions

AGGREGATED_VERSIONS = ("v2", "v2beta1")


def _resource_entry(res: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": res.plural,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": list(res.verbs),
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    return entry


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """The APIResourceList for one group/version (None if not served)."""
    served = [r for r in RESOURCES if r.group == group and r.version == version]
    if not served:
        return None
    resources: list[dict[str, Any]] = []
    for res in served:
        resources.append(_resource_entry(res))
        for sub, (sub_group, sub_version, kind, verbs) in res.subresources.items():
            resources.append(
                {
                    "name": f"{res.plural}/{sub}",
                    "singularName": "",
                    "namespaced": res.namespaced,
                    "group": sub_group,
                    "version": sub_version,
                    "kind": kind,
                    "verbs": list(verbs),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def api_versions() -> dict[str, Any]:
    """GET /api: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def api_group(group: str) -> dict[str, Any] | None:
    """GET /apis/G: one named group (None if not served)."""
    versions = group_versions().get(group)
    if not group or versions is None:
        return None
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs[0],
    }


def api_group_list() -> dict[str, Any]:
    """GET /apis: every named group."""
    groups = [api_group(g) for g in group_versions() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [g for g in groups if g]}


def aggregated(core: bool, version: str) -> dict[str, Any]:
    """The APIGroupDiscoveryList for /api (core=True) or /apis (core=False)."""
    items: list[dict[str, Any]] = []
    for group, versions in group_versions().items():
        if (group == "") != core:
            continue
        entries = []
        for ver in versions:
            resources = []
            for res in (r for r in RESOURCES if r.group == group and r.version == ver):
                entry: dict[str, Any] = {
                    "resource": res.plural,
                    "responseKind": {"group": res.group, "version": res.version, "kind": res.kind},
                    "scope": "Namespaced" if res.namespaced else "Cluster",
                    "singularResource": res.singular,
                    "verbs": list(res.verbs),
                }
                if res.short_names:
                    entry["shortNames"] = list(res.short_names)
                if res.categories:
                    entry["categories"] = list(res.categories)
                if res.subresources:
                    entry["subresources"] = [
                        {
                            "subresource": sub,
                            "responseKind": {"group": g, "version": v, "kind": k},
                            "verbs": list(verbs),
                        }
                        for sub, (g, v, k, verbs) in res.subresources.items()
                    ]
                resources.append(entry)
            entries.append({"version": ver, "resources": resources, "freshness": "Current"})
        metadata: dict[str, Any] = {"creationTimestamp": None}
        if group:
            metadata["name"] = group
        items.append({"metadata": metadata, "versions": entries})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


def wants_aggregated(accept: str) -> str | None:
    """The aggregated discovery version the Accept header asks for first, if any."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if (
            params.get("g") == "apidiscovery.k8s.io"
            and params.get("as") == "APIGroupDiscoveryList"
            and params.get("v") in AGGREGATED_VERSIONS
        ):
            return params["v"]
    return None
