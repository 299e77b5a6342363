"""Typed views of cluster objects that the port returns, so runbooks never touch raw client objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from connectors.kubernetes.annotations import CHECKPOINT_DONE, CHECKPOINT_REQUESTED, CORDON_OWNER, CORDONED_BY

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
RequestPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
EventType = Literal["Normal", "Warning"]


DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"  # a ReplicaSet removes lower costs first
SPARED_ANNOTATION = "gpuops.io/spared"  # gpuops set the pod's deletion cost (it clears only those it set)


@dataclass(frozen=True)
class Taint:
    key: str
    effect: TaintEffect
    value: str = ""


@dataclass(frozen=True)
class NodeCondition:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition: str = ""


@dataclass(frozen=True)
class NodeInfo:
    """A node as gpuops sees it: readiness, cordon state and who owns the cordon, taints, GPU counts."""

    name: str
    unschedulable: bool
    conditions: tuple[NodeCondition, ...]
    taints: tuple[Taint, ...]
    gpu_capacity: int
    gpu_allocatable: int
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""

    @property
    def ready(self) -> bool | None:
        """True / False from the Ready condition; None when the node status is Unknown or missing."""
        for cond in self.conditions:
            if cond.type == "Ready":
                return None if cond.status == "Unknown" else cond.status == "True"
        return None

    @property
    def cordoned_by_gpuops(self) -> bool:
        return self.unschedulable and self.annotations.get(CORDONED_BY) == CORDON_OWNER


@dataclass(frozen=True)
class PodInfo:
    """A pod as a drain or a checkpoint needs it: owner, GPUs, DaemonSet / mirror / emptyDir flags."""

    namespace: str
    name: str
    node: str | None
    phase: str
    ready: bool
    owner_kind: str | None
    owner_name: str | None
    is_daemonset: bool
    is_mirror: bool
    uses_empty_dir: bool
    terminating: bool
    gpu_count: int
    gpu_indices: tuple[int, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    uid: str = ""

    @property
    def checkpoint_requested(self) -> str | None:
        return self.annotations.get(CHECKPOINT_REQUESTED)

    @property
    def checkpoint_done(self) -> bool:
        """Whether the job answered the latest checkpoint request."""
        requested = self.annotations.get(CHECKPOINT_REQUESTED)
        return requested is not None and self.annotations.get(CHECKPOINT_DONE) == requested


@dataclass(frozen=True)
class DeploymentScale:
    namespace: str
    name: str
    replicas: int
    """Wanted replicas (spec)."""
    current: int
    """Replicas that exist now (status)."""


@dataclass(frozen=True)
class ServedDeployment:
    """A Deployment as the autoscaler sees it: its wanted replicas, its pods' selector and GPUs per replica,
    and its labels and annotations (the opt-in, the bounds and the queries live there)."""

    namespace: str
    name: str
    replicas: int
    ready_replicas: int
    selector: Mapping[str, str]
    gpus_per_replica: int
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaStart:
    """One pod of a Deployment: when it was created and when it became Ready (None while it loads), and the
    deletion cost a scale-down reads."""

    name: str
    uid: str
    created_at: float
    ready_at: float | None
    deletion_cost: str | None = None  # its controller.kubernetes.io/pod-deletion-cost annotation
    spared: bool = False  # gpuops set that cost (gpuops.io/spared)


@dataclass(frozen=True)
class NodeRequest:
    """A GPUReset, GPUFence or NodeReboot request and what the node agent reported about it."""

    kind: Literal["GPUReset", "GPUFence", "NodeReboot"]
    name: str
    node: str
    gpu: int | None
    phase: RequestPhase
    message: str = ""
    uuid: str | None = None  # the GPU's UUID as the telemetry named it: the node agent acts on that GPU only

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class NodeValidation:
    """A NodeValidation request (DCGM diagnostics by the node agent) and its verdict: `passed` is None until the
    diagnostic ran (phase Succeeded); `failed_tests` names each failure ("GPU Memory (GPU 6)")."""

    name: str
    node: str
    phase: RequestPhase
    message: str = ""
    passed: bool | None = None
    failed_tests: tuple[str, ...] = ()
    created_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


EvictionOutcome = Literal["evicted", "already_gone"]
