"""The Kubernetes port: `ClusterPort`, the real adapter `KubernetesCluster`, the fake `InMemoryCluster`."""

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
from connectors.kubernetes.fake import InMemoryCluster
from connectors.kubernetes.models import (
    DELETION_COST_ANNOTATION,
    SPARED_ANNOTATION,
    DeploymentScale,
    NodeCondition,
    NodeInfo,
    NodeRequest,
    NodeValidation,
    PodInfo,
    ReplicaStart,
    ServedDeployment,
    Taint,
)
from connectors.kubernetes.port import ClusterPort, NodeValidations, ScalingTargets

__all__ = [
    "DELETION_COST_ANNOTATION",
    "SPARED_ANNOTATION",
    "AccessDenied",
    "AlreadyExists",
    "ClusterError",
    "ClusterNotConfigured",
    "ClusterPort",
    "ClusterUnavailable",
    "Conflict",
    "DeploymentScale",
    "DisruptionBlocked",
    "InMemoryCluster",
    "InvalidRequest",
    "MalformedResponse",
    "NodeCondition",
    "NodeInfo",
    "NodeRequest",
    "NodeValidation",
    "NodeValidations",
    "NotCordonedByGpuops",
    "NotFound",
    "PodInfo",
    "ReplicaStart",
    "ScalingTargets",
    "ServedDeployment",
    "Taint",
]
