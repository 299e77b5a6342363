"""The values runbooks exchange with their callers: risks, targets, plans, diffs and step results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runbooks.errors import InvalidPlan


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RISK_ORDER.index(self)

    def at_least(self, other: Risk) -> Risk:
        """The higher of the two risks."""
        return self if self.rank >= other.rank else other


_RISK_ORDER = (Risk.LOW, Risk.MEDIUM, Risk.HIGH)


class TargetKind(StrEnum):
    NODE = "node"
    GPU = "gpu"
    POD = "pod"
    DEPLOYMENT = "deployment"
    NONE = "none"


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
            raise InvalidPlan(
                f"target kind {self.kind!r} is not one of {', '.join(k.value for k in TargetKind)}"
            ) from None
        required: dict[TargetKind, tuple[str, ...]] = {
            TargetKind.NODE: ("node",),
            TargetKind.GPU: ("node", "gpu"),
            TargetKind.POD: ("namespace", "name"),
            TargetKind.DEPLOYMENT: ("namespace", "name"),
            TargetKind.NONE: (),
        }
        wanted = required[self.kind]
        for attr in ("node", "gpu", "namespace", "name"):
            value = getattr(self, attr)
            if attr in wanted and (value is None or value == ""):
                raise InvalidPlan(f"a {self.kind} target needs {attr}")
            if attr not in wanted and value is not None:
                raise InvalidPlan(f"a {self.kind} target takes no {attr} (got {value!r})")
        if self.gpu is not None and (isinstance(self.gpu, bool) or not isinstance(self.gpu, int) or self.gpu < 0):
            raise InvalidPlan(f"a GPU index is an integer >= 0, not {self.gpu!r}")
        for attr in ("node", "namespace", "name"):
            value = getattr(self, attr)
            if value is not None and "/" in value:
                raise InvalidPlan(f"target {attr} {value!r} must not contain '/'")

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
        """The target a `key()` names; InvalidPlan for anything else."""
        parts = key.split("/") if isinstance(key, str) else []
        try:
            kind = TargetKind(parts[0]) if parts else None
        except ValueError:
            kind = None
        shapes = {
            TargetKind.NODE: 2,
            TargetKind.GPU: 3,
            TargetKind.POD: 3,
            TargetKind.DEPLOYMENT: 3,
            TargetKind.NONE: 1,
        }
        if kind is None or len(parts) != shapes[kind]:
            raise InvalidPlan(
                f"target {key!r} is not one of node/NODE, gpu/NODE/INDEX, pod/NAMESPACE/NAME, "
                "deployment/NAMESPACE/NAME, none"
            )
        if kind is TargetKind.NODE:
            return cls(kind, node=parts[1])
        if kind is TargetKind.GPU:
            if not parts[2].isdigit():
                raise InvalidPlan(f"target {key!r}: the GPU index must be an integer >= 0")
            return cls(kind, node=parts[1], gpu=int(parts[2]))
        if kind in (TargetKind.POD, TargetKind.DEPLOYMENT):
            return cls(kind, namespace=parts[1], name=parts[2])
        return cls(TargetKind.NONE)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Plan:
    """One proposed action: which runbook, with which parameters, on which targets."""

    runbook: str
    params: dict[str, Any]
    targets: tuple[Target, ...]

    def plan_hash(self) -> str:
        """sha256 of the canonical JSON of runbook, params and the sorted target keys."""
        body = {
            "runbook": self.runbook,
            "params": self.params,
            "targets": sorted(t.key() for t in self.targets),
        }
        return hashlib.sha256(_canonical(body).encode()).hexdigest()

    @property
    def target(self) -> Target:
        """The single target of a one-target runbook."""
        if len(self.targets) != 1:
            raise InvalidPlan(f"runbook {self.runbook} takes exactly one target, got {len(self.targets)}")
        return self.targets[0]


@dataclass
class Diff:
    """What a dry run found: the changes it would make and what they would cost."""

    changes: list[str] = field(default_factory=list)
    pods_affected: list[str] = field(default_factory=list)
    gpus_affected: int = 0
    gpu_hours_at_risk: float = 0.0
    blockers: list[str] = field(default_factory=list)

    def merge(self, other: Diff) -> Diff:
        return Diff(
            changes=self.changes + other.changes,
            pods_affected=self.pods_affected + [p for p in other.pods_affected if p not in self.pods_affected],
            gpus_affected=self.gpus_affected + other.gpus_affected,
            gpu_hours_at_risk=self.gpu_hours_at_risk + other.gpu_hours_at_risk,
            blockers=self.blockers + other.blockers,
        )


@dataclass
class StepResult:
    """The outcome of one step (or a whole execute / verify / rollback)."""

    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
