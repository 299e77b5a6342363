"""What an action touches, and the stable key that names it in plans, stored actions and the audit trail:
`node/NODE`, `gpu/NODE/INDEX`, `pod/NAMESPACE/NAME`, `deployment/NAMESPACE/NAME` or `none`. Parse a key with
`Target.parse`, never by splitting it by hand."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class InvalidTarget(ValueError):
    """A target key or target fields that name nothing an action can touch; the message says what would."""


class TargetKind(StrEnum):
    NODE = "node"
    GPU = "gpu"
    POD = "pod"
    DEPLOYMENT = "deployment"
    NONE = "none"


_REQUIRED: dict[TargetKind, tuple[str, ...]] = {
    TargetKind.NODE: ("node",),
    TargetKind.GPU: ("node", "gpu"),
    TargetKind.POD: ("namespace", "name"),
    TargetKind.DEPLOYMENT: ("namespace", "name"),
    TargetKind.NONE: (),
}
_KEY_PARTS = {kind: 1 + len(fields) for kind, fields in _REQUIRED.items()}
_SHAPES = "node/NODE, gpu/NODE/INDEX, pod/NAMESPACE/NAME, deployment/NAMESPACE/NAME, none"


@dataclass(frozen=True)
class Target:
    """What an action touches. `key()` is stable: node/N, gpu/N/I, pod/NS/NAME, deployment/NS/NAME, none."""

    kind: TargetKind
    node: str | None = None
    gpu: int | None = None
    namespace: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", TargetKind(self.kind))
        except ValueError:
            raise InvalidTarget(
                f"target kind {self.kind!r} is not one of {', '.join(k.value for k in TargetKind)}"
            ) from None
        wanted = _REQUIRED[self.kind]
        for attr in ("node", "gpu", "namespace", "name"):
            value = getattr(self, attr)
            if attr in wanted and (value is None or value == ""):
                raise InvalidTarget(f"a {self.kind} target needs {attr}")
            if attr not in wanted and value is not None:
                raise InvalidTarget(f"a {self.kind} target takes no {attr} (got {value!r})")
        if self.gpu is not None and (isinstance(self.gpu, bool) or not isinstance(self.gpu, int) or self.gpu < 0):
            raise InvalidTarget(f"a GPU index is an integer >= 0, not {self.gpu!r}")
        for attr in ("node", "namespace", "name"):
            value = getattr(self, attr)
            if value is not None and "/" in value:
                raise InvalidTarget(f"target {attr} {value!r} must not contain '/'")

    @classmethod
    def for_node(cls, node: str) -> Target:
        return cls(TargetKind.NODE, node=node)

    @classmethod
    def for_gpu(cls, node: str, gpu: int) -> Target:
        return cls(TargetKind.GPU, node=node, gpu=gpu)

    @classmethod
    def for_pod(cls, namespace: str, name: str) -> Target:
        return cls(TargetKind.POD, namespace=namespace, name=name)

    @classmethod
    def for_deployment(cls, namespace: str, name: str) -> Target:
        return cls(TargetKind.DEPLOYMENT, namespace=namespace, name=name)

    def key(self) -> str:
        match self.kind:
            case TargetKind.NODE:
                return f"node/{self.node}"
            case TargetKind.GPU:
                return f"gpu/{self.node}/{self.gpu}"
            case TargetKind.POD:
                return f"pod/{self.namespace}/{self.name}"
            case TargetKind.DEPLOYMENT:
                return f"deployment/{self.namespace}/{self.name}"
        return "none"

    @classmethod
    def parse(cls, key: str) -> Target:
        """The target a `key()` names; InvalidTarget for anything else."""
        parts = key.split("/") if isinstance(key, str) else []
        try:
            kind = TargetKind(parts[0]) if parts else None
        except ValueError:
            kind = None
        if kind is None or len(parts) != _KEY_PARTS[kind]:
            raise InvalidTarget(f"target {key!r} is not one of {_SHAPES}")
        if kind is TargetKind.NODE:
            return cls(kind, node=parts[1])
        if kind is TargetKind.GPU:
            if not parts[2].isdigit():
                raise InvalidTarget(f"target {key!r}: the GPU index must be an integer >= 0")
            return cls(kind, node=parts[1], gpu=int(parts[2]))
        if kind in (TargetKind.POD, TargetKind.DEPLOYMENT):
            return cls(kind, namespace=parts[1], name=parts[2])
        return cls(TargetKind.NONE)
