"""The real `kubernetes` client adapter against the twin over real HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from connectors.kubernetes import (
    ClusterNotConfigured,
    ClusterUnavailable,
    DisruptionBlocked,
    InvalidRequest,
    NodeRequest,
    NotCordonedByGpuops,
    NotFound,
    Taint,
)
from connectors.kubernetes.adapter import KubernetesCluster
from connectors.kubernetes.annotations import CHECKPOINT_REQUESTED, CORDON_INCIDENT, CORDONED_BY
from simulator.kube.state import CHECKPOINT_SECONDS_ANNOTATION, KubeEvent
from tests.integration.kube_twin import KubeTwin, gpu_deployment
from tests.waiting import wait_for

NODE = "gpu-node-001"


@pytest.fixture
def twin() -> Iterator[KubeTwin]:
    twin = KubeTwin(speed=100, node_reboot_seconds=120).start()
    twin.state.add_node(NODE, 8)
    twin.state.add_node("gpu-node-002", 8)
    try:
        yield twin
    finally:
        twin.stop()


@pytest.fixture
def cluster(twin: KubeTwin) -> Iterator[KubernetesCluster]:
    cluster = KubernetesCluster.connect(api_url=twin.url, request_timeout=5)
    try:
        yield cluster
    finally:
        cluster.close()


def test_cordon_and_uncordon_with_gpuops_annotation(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    events: list[KubeEvent] = []
    twin.state.subscribe(events.append)
    node = cluster.cordon(NODE, reason="xid79 on GPU 3", incident="inc-42")
    assert node.unschedulable and node.cordoned_by_gpuops
    stored = twin.state.get_node(NODE)
    assert stored["spec"]["unschedulable"] is True
    assert stored["metadata"]["annotations"][CORDONED_BY] == "gpuops"
    assert stored["metadata"]["annotations"][CORDON_INCIDENT] == "inc-42"
    assert cluster.cordon(NODE, reason="again").cordoned_by_gpuops  # idempotent
    back = cluster.uncordon(NODE)
    assert not back.unschedulable and CORDONED_BY not in back.annotations
    assert twin.state.node_schedulable(NODE)
    assert [e.kind for e in events] == ["node_cordoned", "node_uncordoned"]


def test_uncordon_refuses_a_node_cordoned_by_someone_else(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    twin.state.update_object("nodes", "", NODE, lambda n: {**n, "spec": {"unschedulable": True}})
    before = cluster.get_node(NODE)
    assert before.unschedulable and not before.cordoned_by_gpuops
    # gpuops' cordon of an already cordoned node does not claim it
    assert not cluster.cordon(NODE, reason="xid").cordoned_by_gpuops
    with pytest.raises(NotCordonedByGpuops, match="someone else"):
        cluster.uncordon(NODE)
    assert not twin.state.node_schedulable(NODE)


def test_taints_and_conditions(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    taint = Taint("gpuops.io/unhealthy-gpu", "NoSchedule", "3")
    assert cluster.add_taint(NODE, taint).taints == (taint,)
    assert cluster.add_taint(NODE, Taint("other", "NoExecute")).taints[0] == taint
    assert [t.key for t in cluster.remove_taint(NODE, "gpuops.io/unhealthy-gpu").taints] == ["other"]
    twin.state.set_node_ready(NODE, False, "KubeletNotReady")
    node = cluster.get_node(NODE)
    assert node.ready is False and node.gpu_capacity == 8
    assert {c.type for c in node.conditions} >= {"Ready", "MemoryPressure"}
    assert [n.name for n in cluster.list_nodes()] == [NODE, "gpu-node-002"]
    with pytest.raises(NotFound, match="gpu-node-404"):
        cluster.get_node("gpu-node-404")


def test_list_pods_on_node_with_flags(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    twin.state.add_deployment(gpu_deployment("train", 1, 8))
    twin.state.add_daemonset(
        {
            "metadata": {"name": "dcgm", "namespace": "gpu-operator"},
            "spec": {"template": {"metadata": {"labels": {"app": "dcgm"}}}},
        }
    )
    twin.state.add_pod(
        {
            "metadata": {"name": "scratch", "namespace": "tools"},
            "spec": {"nodeName": "gpu-node-002", "volumes": [{"name": "t", "emptyDir": {}}]},
        }
    )
    pods = {p.name.split("-")[0]: p for p in cluster.list_pods(NODE)}
    assert set(pods) == {"train", "dcgm"}
    train = pods["train"]
    assert train.owner_kind == "Deployment" and train.gpu_count == 8 and train.gpu_indices == tuple(range(8))
    assert train.ready and not train.is_daemonset and not train.uses_empty_dir
    assert pods["dcgm"].is_daemonset and pods["dcgm"].gpu_count == 0
    (scratch,) = cluster.list_pods("gpu-node-002")[1:] or [
        p for p in cluster.list_pods("gpu-node-002") if p.name == "scratch"
    ]
    assert scratch.uses_empty_dir and scratch.owner_kind is None


def test_eviction_blocked_until_the_budget_allows(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    twin.state.add_deployment(gpu_deployment("train", 1, 4))
    twin.state.add_pdb(
        {
            "metadata": {"name": "train", "namespace": "ml"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "train"}}},
        }
    )
    (pod,) = cluster.list_pods(NODE)
    started = time.monotonic()
    with pytest.raises(DisruptionBlocked, match="relax the budget") as blocked:
        cluster.evict_pod("ml", pod.name, deadline_s=0.3, retry_interval_s=0.05)
    assert time.monotonic() - started >= 0.3
    assert "attempts" in str(blocked.value) and not str(blocked.value).startswith("evict pod ml/x")
    assert cluster.get_pod("ml", pod.name).ready  # nothing was lost

    assert cluster.set_scale("ml", "train", 2).replicas == 2  # another replica comes up and becomes ready
    assert cluster.evict_pod("ml", pod.name, deadline_s=10, retry_interval_s=0.05) == "evicted"
    wait_for(
        lambda: pod.name not in {p.name for p in cluster.list_pods(NODE)},
        timeout=10,
        message="evicted pod still there",
    )
    assert cluster.evict_pod("ml", pod.name, deadline_s=1) == "already_gone"


def test_delete_pod_and_not_found(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    twin.state.add_pod({"metadata": {"name": "solo", "namespace": "ml"}, "spec": {"nodeName": NODE}})
    cluster.delete_pod("ml", "solo", grace_period_s=0)
    with pytest.raises(NotFound):
        cluster.get_pod("ml", "solo")
    with pytest.raises(NotFound):
        cluster.delete_pod("ml", "solo")


def test_scale_creates_and_removes_pods(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    twin.state.add_deployment(gpu_deployment("serve", 1, 1, namespace="inference"))
    assert cluster.get_scale("inference", "serve").replicas == 1
    cluster.set_scale("inference", "serve", 3)
    wait_for(lambda: len(twin.state.list_pods(namespace="inference")) == 3, timeout=10, message="no scale up")
    wait_for(
        lambda: cluster.get_scale("inference", "serve").current == 3,
        timeout=10,
        message="scale status not updated",
    )
    cluster.set_scale("inference", "serve", 1)
    wait_for(lambda: len(twin.state.list_pods(namespace="inference")) == 1, timeout=10, message="no scale down")
    with pytest.raises(InvalidRequest):
        cluster.set_scale("inference", "serve", -1)
    with pytest.raises(NotFound):
        cluster.get_scale("inference", "nope")


def test_checkpoint_request_is_answered(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    twin.state.add_deployment(gpu_deployment("train", 1, 8, **{CHECKPOINT_SECONDS_ANNOTATION: "60"}))
    (pod,) = cluster.list_pods(NODE)
    asked = cluster.request_checkpoint("ml", pod.name, "inc-9")
    assert asked.annotations[CHECKPOINT_REQUESTED] == "inc-9" and not asked.checkpoint_done
    wait_for(lambda: cluster.get_pod("ml", pod.name).checkpoint_done, timeout=10, message="the job did not checkpoint")
    cleared = cluster.annotate_pod("ml", pod.name, {CHECKPOINT_REQUESTED: None})
    assert CHECKPOINT_REQUESTED not in cleared.annotations


def test_gpu_reset_request_succeeds_and_fires_event(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    events: list[KubeEvent] = []
    twin.state.subscribe(events.append)
    request = cluster.request_gpu_reset(NODE, 3, name="inc-1-reset")
    assert request.phase == "Pending" and request.gpu == 3
    assert cluster.request_gpu_reset(NODE, 3, name="inc-1-reset").name == "inc-1-reset"  # idempotent

    def finished() -> NodeRequest | None:
        reset = cluster.get_gpu_reset("inc-1-reset")
        return reset if reset.finished else None

    done = wait_for(finished, timeout=10, message="reset unfinished")
    assert done.phase == "Succeeded"
    assert [(e.kind, e.node, e.gpu) for e in events if e.kind == "gpu_reset"] == [("gpu_reset", NODE, 3)]


def test_node_reboot_goes_not_ready_then_ready(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    request = cluster.request_node_reboot(NODE)
    wait_for(lambda: cluster.get_node(NODE).ready is None, timeout=10, message="node did not go down")
    assert cluster.get_node_reboot(request.name).phase == "Running"
    wait_for(lambda: cluster.get_node(NODE).ready is True, timeout=10, message="node did not come back")
    assert cluster.get_node_reboot(request.name).phase == "Succeeded"
    with pytest.raises(NotFound):
        cluster.get_node_reboot("missing")


def test_post_event(cluster: KubernetesCluster, twin: KubeTwin) -> None:
    cluster.post_event(
        kind="Node", name=NODE, reason="GpuopsCordoned", message="cordoned for inc-42", type="Warning"
    )
    items, _ = twin.state.list_objects("events", "default", field_selector=f"involvedObject.name={NODE}")
    assert [(e["reason"], e["type"], e["source"]["component"]) for e in items] == [
        ("GpuopsCordoned", "Warning", "gpuops")
    ]


def test_unreachable_api_server_is_cluster_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cluster = KubernetesCluster.connect(api_url=f"http://127.0.0.1:{port}", request_timeout=1)
    with pytest.raises(ClusterUnavailable, match="cannot reach"):
        cluster.get_node(NODE)
    cluster.close()


def test_missing_kubeconfig_is_cluster_unavailable(tmp_path: object) -> None:
    with pytest.raises(ClusterNotConfigured, match="configuration"):
        KubernetesCluster.connect(kubeconfig=f"{tmp_path}/absent-kubeconfig")
