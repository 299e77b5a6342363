"""The resources the twin serves (group, version, kind, scope, verbs): the source of discovery."""

from __future__ import annotations

from dataclasses import dataclass, field

CRUD = ("create", "delete", "get", "list", "patch", "update")


@dataclass(frozen=True)
class Resource:
    plural: str
    group: str
    version: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = CRUD
    short_names: tuple[str, ...] = ()
    singular: str = ""
    categories: tuple[str, ...] = ()
    subresources: dict[str, tuple[str, str, str, tuple[str, ...]]] = field(default_factory=dict)
    """subresource name -> (group, version, kind, verbs)."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version


RESOURCES: tuple[Resource, ...] = (
    Resource("namespaces", "", "v1", "Namespace", False, ("get", "list"), ("ns",), "namespace"),
    Resource(
        "nodes",
        "",
        "v1",
        "Node",
        False,
        CRUD,
        ("no",),
        "node",
        subresources={"status": ("", "v1", "Node", ("get", "patch", "update"))},
    ),
    Resource(
        "pods",
        "",
        "v1",
        "Pod",
        True,
        CRUD,
        ("po",),
        "pod",
        ("all",),
        subresources={
            "eviction": ("policy", "v1", "Eviction", ("create",)),
            "status": ("", "v1", "Pod", ("get", "patch", "update")),
        },
    ),
    Resource("events", "", "v1", "Event", True, CRUD, ("ev",), "event"),
    Resource(
        "deployments",
        "apps",
        "v1",
        "Deployment",
        True,
        CRUD,
        ("deploy",),
        "deployment",
        ("all",),
        subresources={
            "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
            "status": ("apps", "v1", "Deployment", ("get", "patch", "update")),
        },
    ),
    Resource("daemonsets", "apps", "v1", "DaemonSet", True, ("get", "list"), ("ds",), "daemonset", ("all",)),
    Resource(
        "poddisruptionbudgets",
        "policy",
        "v1",
        "PodDisruptionBudget",
        True,
        CRUD,
        ("pdb",),
        "poddisruptionbudget",
    ),
    Resource(
        "horizontalpodautoscalers",
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        True,
        CRUD,
        ("hpa",),
        "horizontalpodautoscaler",
        ("all",),
    ),
    Resource(
        "scaledobjects",
        "keda.sh",
        "v1alpha1",
        "ScaledObject",
        True,
        CRUD,
        ("so",),
        "scaledobject",
    ),
    Resource(
        "gpuresets",
        "gpuops.io",
        "v1alpha1",
        "GPUReset",
        False,
        CRUD,
        ("gpureset",),
        "gpureset",
        subresources={"status": ("gpuops.io", "v1alpha1", "GPUReset", ("get", "patch", "update"))},
    ),
    Resource(
        "gpufences",
        "gpuops.io",
        "v1alpha1",
        "GPUFence",
        False,
        CRUD,
        ("gpufence",),
        "gpufence",
        subresources={"status": ("gpuops.io", "v1alpha1", "GPUFence", ("get", "patch", "update"))},
    ),
    Resource(
        "nodereboots",
        "gpuops.io",
        "v1alpha1",
        "NodeReboot",
        False,
        CRUD,
        ("nodereboot",),
        "nodereboot",
        subresources={"status": ("gpuops.io", "v1alpha1", "NodeReboot", ("get", "patch", "update"))},
    ),
    Resource(
        "nodevalidations",
        "gpuops.io",
        "v1alpha1",
        "NodeValidation",
        False,
        CRUD,
        ("nodevalidation",),
        "nodevalidation",
        subresources={"status": ("gpuops.io", "v1alpha1", "NodeValidation", ("get", "patch", "update"))},
    ),
)

BY_PLURAL: dict[str, Resource] = {r.plural: r for r in RESOURCES}


def resource_for(group: str, version: str, plural: str) -> Resource | None:
    """The served resource at this group/version/plural, or None."""
    res = BY_PLURAL.get(plural)
    if res is None or res.group != group or res.version != version:
        return None
    return res


def group_versions() -> dict[str, list[str]]:
    """Served groups ('' = core) and their versions, in a stable order."""
    out: dict[str, list[str]] = {}
    for res in RESOURCES:
        versions = out.setdefault(res.group, [])
        if res.version not in versions:
            versions.append(res.version)
    return out
