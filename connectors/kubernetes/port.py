"""ClusterPort: what gpuops asks of a Kubernetes cluster; the real adapter and the fake both provide it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from connectors.kubernetes.errors import DisruptionBlocked
from connectors.kubernetes.models import (
    DeploymentScale,
    EventType,
    EvictionOutcome,
    NodeInfo,
    NodeRequest,
    NodeValidation,
    PodInfo,
    ReplicaStart,
    ServedDeployment,
    Taint,
)

T = TypeVar("T")


def request_suffix() -> str:
    """A node request name's random part (the request methods take a `uuid` argument, the GPU's, which hides the
    module there)."""
    return uuid.uuid4().hex[:8]


@runtime_checkable
class ClusterPort(Protocol):
    """Cluster operations for runbooks; every error is a `connectors.kubernetes.errors.ClusterError`."""

    def get_node(self, name: str) -> NodeInfo: ...

    def list_nodes(self) -> list[NodeInfo]: ...

    def cordon(self, node: str, *, reason: str, incident: str | None = None) -> NodeInfo:
        """Mark the node unschedulable with gpuops' annotation. A node someone else cordoned stays theirs."""
        ...

    def uncordon(self, node: str) -> NodeInfo:
        """Undo gpuops' cordon; raises NotCordonedByGpuops for a cordon gpuops did not make."""
        ...

    def add_taint(self, node: str, taint: Taint) -> NodeInfo: ...

    def remove_taint(self, node: str, key: str, effect: str | None = None) -> NodeInfo: ...

    def list_pods(self, node: str) -> list[PodInfo]:
        """Pods bound to the node (a field selector on spec.nodeName)."""
        ...

    def list_unscheduled_pods(self) -> list[PodInfo]:
        """Pods waiting for a node (Pending with no spec.nodeName: the scheduler's queue), in every namespace."""
        ...

    def get_pod(self, namespace: str, name: str) -> PodInfo: ...

    def evict_pod(
        self,
        namespace: str,
        name: str,
        *,
        deadline_s: float = 300.0,
        retry_interval_s: float = 5.0,
        grace_period_s: int | None = None,
    ) -> EvictionOutcome:
        """Evict via policy/v1 Eviction, retrying while a PodDisruptionBudget blocks it, until the deadline.

        Raises DisruptionBlocked at the deadline. A pod already gone counts as done.
        """
        ...

    def delete_pod(self, namespace: str, name: str, *, grace_period_s: int | None = None) -> None: ...

    def get_scale(self, namespace: str, deployment: str) -> DeploymentScale: ...

    def set_scale(self, namespace: str, deployment: str, replicas: int) -> DeploymentScale: ...

    def annotate_pod(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> PodInfo:
        """Set (or, with None, remove) annotations on a pod."""
        ...

    def request_checkpoint(self, namespace: str, name: str, request_id: str) -> PodInfo:
        """Ask a training job's pod to checkpoint; the job answers with the checkpoint-done annotation."""
        ...

    def request_gpu_reset(self, node: str, gpu: int, *, name: str | None = None,
                          uuid: str | None = None) -> NodeRequest:
        """Create a GPUReset request (idempotent for a given name). With `uuid` (the GPU's, as the telemetry named
        it), the node agent resets GPU `gpu` only if it is still that GPU (NVML renumbers GPUs when one leaves)."""
        ...

    def get_gpu_reset(self, name: str) -> NodeRequest: ...

    def request_gpu_fence(self, node: str, gpu: int, *, name: str | None = None,
                          uuid: str | None = None) -> NodeRequest:
        """Create a GPUFence request (idempotent for a given name): the node agent takes the GPU from the device
        plugin until the node's driver reloads (with `uuid`, only if GPU `gpu` is still that GPU)."""
        ...

    def get_gpu_fence(self, name: str) -> NodeRequest: ...

    def request_node_reboot(self, node: str, *, name: str | None = None) -> NodeRequest:
        """Create a NodeReboot request (idempotent for a given name)."""
        ...

    def get_node_reboot(self, name: str) -> NodeRequest: ...

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
        """Record a core/v1 Event about an object (a Node, a Pod...)."""
        ...


@runtime_checkable
class NodeValidations(Protocol):
    """NodeValidation requests (runbooks/NODE_AGENT.md): what a node's return to service asks of the node agent."""

    def request_node_validation(
        self, node: str, *, name: str, gpus: Sequence[int] = (), level: int = 2
    ) -> NodeValidation:
        """Create the request (idempotent for a given name: the existing one comes back)."""
        ...

    def get_node_validation(self, name: str) -> NodeValidation: ...


@runtime_checkable
class ScalingTargets(Protocol):
    """What the inference autoscaler reads of a cluster besides the scale subresource: the Deployments that opted
    in, their pods' start times (cold starts), and which Deployments an HPA or a KEDA ScaledObject owns."""

    def list_served_deployments(self, label_selector: str) -> list[ServedDeployment]:
        """Deployments in every namespace matching `label_selector`."""
        ...

    def get_served_deployment(self, namespace: str, name: str) -> ServedDeployment: ...

    def list_replica_starts(self, namespace: str, selector: Mapping[str, str]) -> list[ReplicaStart]:
        """The pods a Deployment's selector matches, with their creation and Ready times."""
        ...

    def autoscaled_elsewhere(self) -> set[tuple[str, str]]:
        """(namespace, deployment) of every Deployment an autoscaling/v2 HPA or a keda.sh ScaledObject targets
        (a cluster without KEDA's CRD has no ScaledObjects)."""
        ...


def retry_while_blocked(
    attempt: Callable[[], T],
    *,
    deadline_s: float,
    retry_interval_s: float,
    what: str,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> T:
    """Call `attempt` until it stops raising DisruptionBlocked; re-raise with advice after the deadline."""
    if deadline_s < 0 or retry_interval_s <= 0:
        raise ValueError("deadline_s must be >= 0 and retry_interval_s > 0")
    end = clock() + deadline_s
    attempts = 0
    while True:
        attempts += 1
        try:
            return attempt()
        except DisruptionBlocked as exc:
            remaining = end - clock()
            if remaining <= 0:
                raise DisruptionBlocked(
                    f"{what}: still blocked by a PodDisruptionBudget after {deadline_s:g}s and {attempts} "
                    f"attempts ({exc}). Wait for the workload's other replicas to become ready, relax the "
                    "budget, or escalate to a human."
                ) from exc
            sleep(min(retry_interval_s, remaining))
