"""One contract, two implementations: the in-memory fake and the real adapter against the twin agree.

Runbook tests may use either, so every behaviour a runbook relies on is checked on both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from connectors.kubernetes import (
    AlreadyExists,
    ClusterPort,
    DisruptionBlocked,
    InMemoryCluster,
    InvalidRequest,
    NotCordonedByGpuops,
    NotFound,
    Taint,
)
from connectors.kubernetes.adapter import KubernetesCluster
from connectors.kubernetes.annotations import CHECKPOINT_DONE
from connectors.kubernetes.models import DeploymentScale
from tests.integration.kube_twin import KubeTwin
from tests.waiting import wait_for

NODE, OTHER = "gpu-node-001", "gpu-node-002"


@dataclass
class World:
    """A cluster port plus the hooks a test uses to arrange the world behind it."""

    port: ClusterPort
    cordon_by_someone_else: Callable[[str], None]
    add_pod: Callable[[str, str, str, int], None]
    block_evictions: Callable[[str, str], None]
    answer_checkpoint: Callable[[str, str], None]
    add_deployment: Callable[[str, str, int], None]


def fake_world() -> Iterator[World]:
    fake = InMemoryCluster(sleep=lambda s: None)
    fake.add_node(NODE)
    fake.add_node(OTHER)

    def other_cordon(node: str) -> None:
        fake.nodes[node] = dataclasses.replace(fake.nodes[node], unschedulable=True)

    def add_pod(namespace: str, name: str, node: str, gpus: int) -> None:
        fake.add_pod(namespace, name, node, gpus=gpus)

    def deployment(namespace: str, name: str, replicas: int) -> None:
        fake.scales[(namespace, name)] = DeploymentScale(namespace, name, replicas, replicas)

    yield World(fake, other_cordon, add_pod, fake.block_evictions, fake.answer_checkpoint, deployment)


def real_world() -> Iterator[World]:
    twin = KubeTwin(speed=100).start()
    twin.state.add_node(NODE, 8)
    twin.state.add_node(OTHER, 8)
    cluster = KubernetesCluster.connect(api_url=twin.url, request_timeout=5)

    def other_cordon(node: str) -> None:
        twin.state.update_object("nodes", "", node, lambda n: {**n, "spec": {"unschedulable": True}})

    def add_pod(namespace: str, name: str, node: str, gpus: int) -> None:
        twin.state.add_pod(
            {
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
                "spec": {
                    "nodeName": node,
                    "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
                },
            }
        )

    def block(namespace: str, name: str) -> None:
        twin.state.add_pdb(
            {
                "metadata": {"name": f"{name}-pdb", "namespace": namespace},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": name}}},
            }
        )

    def answer(namespace: str, name: str) -> None:
        def done(pod: dict[str, object]) -> dict[str, object]:
            notes = pod["metadata"]["annotations"]  # type: ignore[index]
            notes[CHECKPOINT_DONE] = notes["gpuops.io/checkpoint-requested"]  # type: ignore[index]
            return pod

        twin.state.update_object("pods", namespace, name, done)

    def deployment(namespace: str, name: str, replicas: int) -> None:
        twin.state.add_deployment(
            {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {}},
                },
            }
        )

    try:
        yield World(cluster, other_cordon, add_pod, block, answer, deployment)
    finally:
        cluster.close()
        twin.stop()


@pytest.fixture(params=["fake", "real"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    yield from (fake_world() if request.param == "fake" else real_world())


def test_cordon_ownership(world: World) -> None:
    port = world.port
    assert port.cordon(NODE, reason="xid79", incident="inc-1").cordoned_by_gpuops
    assert port.cordon(NODE, reason="again").cordoned_by_gpuops
    uncordoned = port.uncordon(NODE)
    assert not uncordoned.unschedulable and not uncordoned.cordoned_by_gpuops
    assert not port.uncordon(NODE).unschedulable  # idempotent
    world.cordon_by_someone_else(OTHER)
    assert not port.cordon(OTHER, reason="xid").cordoned_by_gpuops
    with pytest.raises(NotCordonedByGpuops):
        port.uncordon(OTHER)
    assert port.get_node(OTHER).unschedulable


def test_nodes_are_listed_with_their_cordon(world: World) -> None:
    world.port.cordon(NODE, reason="xid79", incident="inc-1")
    listed = {node.name: node for node in world.port.list_nodes()}
    assert sorted(listed) == [NODE, OTHER]
    assert listed[NODE].unschedulable and listed[NODE].cordoned_by_gpuops
    assert not listed[OTHER].unschedulable


def test_taints(world: World) -> None:
    taint = Taint("gpuops.io/bad-gpu", "NoSchedule", "3")
    assert world.port.add_taint(NODE, taint).taints == (taint,)
    assert world.port.add_taint(NODE, taint).taints == (taint,)
    assert world.port.remove_taint(NODE, "gpuops.io/bad-gpu", "NoSchedule").taints == ()
    assert world.port.remove_taint(NODE, "absent").taints == ()
    with pytest.raises(NotFound):
        world.port.add_taint("gpu-node-404", taint)


def test_pods_and_eviction(world: World) -> None:
    world.add_pod("ml", "train-0", NODE, 8)
    world.add_pod("ml", "train-1", OTHER, 8)
    (pod,) = world.port.list_pods(NODE)
    assert (pod.name, pod.gpu_count, pod.ready) == ("train-0", 8, True)
    assert world.port.list_pods("gpu-node-404") == []
    world.block_evictions("ml", "train-1")
    with pytest.raises(DisruptionBlocked):
        world.port.evict_pod("ml", "train-1", deadline_s=0.2, retry_interval_s=0.05)
    assert world.port.get_pod("ml", "train-1").name == "train-1"
    assert world.port.evict_pod("ml", "train-0", deadline_s=5, retry_interval_s=0.05) == "evicted"
    wait_for(lambda: world.port.list_pods(NODE) == [], timeout=10, message="the evicted pod stayed")
    assert world.port.evict_pod("ml", "train-0", deadline_s=1) == "already_gone"
    with pytest.raises(NotFound):
        world.port.get_pod("ml", "train-0")
    with pytest.raises(NotFound):
        world.port.delete_pod("ml", "train-0")


def test_checkpoint_annotations(world: World) -> None:
    world.add_pod("ml", "train-0", NODE, 8)
    asked = world.port.request_checkpoint("ml", "train-0", "inc-3")
    assert asked.checkpoint_requested == "inc-3" and not asked.checkpoint_done
    world.answer_checkpoint("ml", "train-0")
    assert world.port.get_pod("ml", "train-0").checkpoint_done
    cleared = world.port.annotate_pod("ml", "train-0", {"gpuops.io/checkpoint-requested": None})
    assert cleared.checkpoint_requested is None and not cleared.checkpoint_done
    with pytest.raises(NotFound):
        world.port.annotate_pod("ml", "missing", {"a": "b"})


def test_scale(world: World) -> None:
    world.add_deployment("serve", "api", 2)
    assert world.port.get_scale("serve", "api").replicas == 2
    assert world.port.set_scale("serve", "api", 4).replicas == 4
    with pytest.raises(InvalidRequest):
        world.port.set_scale("serve", "api", -1)
    with pytest.raises(NotFound):
        world.port.get_scale("serve", "missing")


def test_node_requests(world: World) -> None:
    first = world.port.request_gpu_reset(NODE, 2, name="inc-5-reset")
    assert (first.kind, first.node, first.gpu, first.phase) == ("GPUReset", NODE, 2, "Pending")
    assert world.port.request_gpu_reset(NODE, 2, name="inc-5-reset").name == "inc-5-reset"
    with pytest.raises(AlreadyExists):
        world.port.request_gpu_reset(NODE, 3, name="inc-5-reset")
    assert world.port.get_gpu_reset("inc-5-reset").node == NODE
    with pytest.raises(NotFound):
        world.port.get_node_reboot("inc-5-reset")
    reboot = world.port.request_node_reboot(OTHER, name="inc-5-reboot")
    assert (reboot.kind, reboot.gpu) == ("NodeReboot", None)
    lost = world.port.request_gpu_reset("gpu-node-404", 0, name="lost")
    assert lost.name == "lost"
    wait_for(
        lambda: world.port.get_gpu_reset("lost").phase == "Failed",
        timeout=10,
        message="reset of a missing node not failed",
    )
    world.port.post_event(kind="Node", name=NODE, reason="GpuopsTest", message="contract")
