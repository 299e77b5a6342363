"""The twin's Kubernetes state: controllers, scheduling, evictions, fault hooks, resets and reboots."""

from __future__ import annotations

from typing import Any

import pytest

from simulator.kube.errors import AlreadyExists, Conflict, DisruptionBudgetBlocked, Invalid, NotFound
from simulator.kube.state import (
    CHECKPOINT_DONE,
    CHECKPOINT_REQUESTED,
    CHECKPOINT_SECONDS_ANNOTATION,
    GPU_ANNOTATION,
    WORKLOAD_LABEL,
    KubeEvent,
    KubeState,
)


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def advance(state: KubeState, clock: Clock, seconds: float, step: float = 1.0) -> None:
    end = clock.t + seconds
    while clock.t < end:
        clock.t = min(end, clock.t + step)
        state.tick(clock.t)


def training(
    name: str, replicas: int, gpus: int, namespace: str = "ml", **template_notes: str
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name, WORKLOAD_LABEL: name},
                    "annotations": dict(template_notes),
                },
                "spec": {
                    "containers": [{"name": "trainer", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]
                },
            },
        },
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> KubeState:
    s = KubeState(clock, pod_start_seconds=5, gpu_reset_seconds=30, node_reboot_seconds=180)
    s.add_node("gpu-node-001", 8)
    s.add_node("gpu-node-002", 8)
    return s


@pytest.fixture
def events(state: KubeState) -> list[KubeEvent]:
    seen: list[KubeEvent] = []
    state.subscribe(seen.append)
    return seen


def test_initial_deployment_runs_at_once_and_packs_gpus(state: KubeState, events: list[KubeEvent]) -> None:
    state.add_deployment(training("train", replicas=3, gpus=4))
    assignments = state.gpu_assignments()
    assert len(assignments) == 12
    per_pod: dict[str, set[tuple[str, int]]] = {}
    for (node, gpu), (pod, namespace, container) in assignments.items():
        assert namespace == "ml" and container == "trainer"
        per_pod.setdefault(pod, set()).add((node, gpu))
    assert all(len(v) == 4 and len({n for n, _ in v}) == 1 for v in per_pod.values())
    assert [e.kind for e in events].count("pod_started") == 3
    assert all(e.detail["workload"] == "train" for e in events if e.kind == "pod_started")


def test_bound_pod_keeps_its_gpu_annotation(state: KubeState) -> None:
    state.add_pod(
        {
            "metadata": {"name": "infer", "namespace": "serve", "annotations": {GPU_ANNOTATION: "6,7"}},
            "spec": {"nodeName": "gpu-node-002", "containers": [{"name": "srv"}]},
        }
    )
    assert state.gpu_assignments() == {
        ("gpu-node-002", 6): ("infer", "serve", "srv"),
        ("gpu-node-002", 7): ("infer", "serve", "srv"),
    }


def test_unknown_node_is_not_found(state: KubeState) -> None:
    with pytest.raises(NotFound):
        state.get_node("gpu-node-404")
    with pytest.raises(KeyError):
        state.node_ready("gpu-node-404")


def test_duplicate_node_is_refused(state: KubeState) -> None:
    with pytest.raises(AlreadyExists):
        state.add_node("gpu-node-001", 8)


def test_cordoned_and_not_ready_nodes_get_no_new_pods(state: KubeState, clock: Clock) -> None:
    state.update_object("nodes", "", "gpu-node-001", lambda n: {**n, "spec": {"unschedulable": True}})
    state.set_node_ready("gpu-node-002", False, "KubeletNotReady")
    state.create_object("pods", "ml", training("x", 1, 1)["spec"]["template"] | {"metadata": {"name": "p1"}})
    advance(state, clock, 20)
    pod = state.get_object("pods", "ml", "p1")
    assert "nodeName" not in pod["spec"] and pod["status"]["phase"] == "Pending"
    assert any(c["reason"] == "Unschedulable" for c in pod["status"]["conditions"])
    state.set_node_ready("gpu-node-002", True)
    advance(state, clock, 10)
    pod = state.get_object("pods", "ml", "p1")
    assert pod["spec"]["nodeName"] == "gpu-node-002" and pod["status"]["phase"] == "Running"


def test_pdb_blocks_eviction_until_a_replacement_is_ready(state: KubeState, clock: Clock) -> None:
    state.add_deployment(training("train", replicas=2, gpus=4))
    state.add_pdb(
        {
            "metadata": {"name": "train", "namespace": "ml"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "train"}}},
        }
    )
    first, second = (p["metadata"]["name"] for p in state.list_pods(namespace="ml"))
    state.evict("ml", first)
    with pytest.raises(DisruptionBudgetBlocked):
        state.evict("ml", second)
    advance(state, clock, 40)  # grace period ends, the replacement is scheduled and starts
    names = {p["metadata"]["name"] for p in state.list_pods(namespace="ml")}
    assert first not in names and len(names) == 2
    state.evict("ml", second)


def test_graceful_deletion_takes_simulated_time(
    state: KubeState, clock: Clock, events: list[KubeEvent]
) -> None:
    state.add_deployment(training("train", replicas=1, gpus=8))
    (pod,) = state.list_pods(namespace="ml")
    name = pod["metadata"]["name"]
    state.delete_object("pods", "ml", name, grace_seconds=20)
    advance(state, clock, 19)
    assert "deletionTimestamp" in state.get_object("pods", "ml", name)["metadata"]
    advance(state, clock, 2)
    with pytest.raises(NotFound):
        state.get_object("pods", "ml", name)
    stopped = [e for e in events if e.kind == "pod_stopped"]
    assert stopped and stopped[0].pod == name and stopped[0].detail["gpus"] == list(range(8))


def test_fail_pod_frees_gpus_and_controller_replaces_it(
    state: KubeState, clock: Clock, events: list[KubeEvent]
) -> None:
    state.add_deployment(training("train", replicas=1, gpus=8))
    (pod,) = state.list_pods(namespace="ml")
    state.fail_pod("ml", pod["metadata"]["name"], "OOMKilled")
    assert events[-1].kind == "pod_stopped" and events[-1].detail["reason"] == "OOMKilled"
    assert state.gpu_assignments() == {}
    advance(state, clock, 10)
    (new,) = state.list_pods(namespace="ml")
    assert new["metadata"]["name"] != pod["metadata"]["name"] and new["status"]["phase"] == "Running"


def test_fail_bare_pod_stays_failed(state: KubeState) -> None:
    state.add_pod({"metadata": {"name": "solo"}, "spec": {"nodeName": "gpu-node-001"}})
    state.fail_pod("default", "solo", "Error")
    assert state.get_object("pods", "default", "solo")["status"]["phase"] == "Failed"
    with pytest.raises(NotFound):
        state.fail_pod("default", "ghost", "Error")


def test_scale_creates_and_removes_pods(state: KubeState, clock: Clock, events: list[KubeEvent]) -> None:
    state.add_deployment(training("serve", replicas=1, gpus=1))
    state.set_scale("ml", "serve", 4)
    advance(state, clock, 10)
    assert sum(p["status"]["phase"] == "Running" for p in state.list_pods(namespace="ml")) == 4
    state.set_scale("ml", "serve", 2)
    advance(state, clock, 40)
    assert len(state.list_pods(namespace="ml")) == 2
    assert any(e.kind == "deployment_scaled" for e in events)
    with pytest.raises(Invalid):
        state.set_scale("ml", "serve", -1)


def test_stale_resource_version_conflicts(state: KubeState) -> None:
    node = state.get_node("gpu-node-001")
    state.update_object("nodes", "", "gpu-node-001", lambda n: {**n, "spec": {"unschedulable": True}})
    with pytest.raises(Conflict):
        state.update_object("nodes", "", "gpu-node-001", lambda n: node)


def test_gpu_reset_runs_when_free_and_fails_when_in_use(
    state: KubeState, clock: Clock, events: list[KubeEvent]
) -> None:
    state.add_pod(
        {
            "metadata": {"name": "busy", "annotations": {GPU_ANNOTATION: "3"}},
            "spec": {"nodeName": "gpu-node-001"},
        }
    )
    state.create_object(
        "gpuresets", "", {"metadata": {"name": "r1"}, "spec": {"nodeName": "gpu-node-001", "gpu": 2}}
    )
    state.create_object(
        "gpuresets", "", {"metadata": {"name": "r2"}, "spec": {"nodeName": "gpu-node-001", "gpu": 3}}
    )
    advance(state, clock, 1)
    assert state.get_object("gpuresets", "", "r1")["status"]["phase"] == "Running"
    failed = state.get_object("gpuresets", "", "r2")["status"]
    assert failed["phase"] == "Failed" and "in use by pod default/busy" in failed["message"]
    advance(state, clock, 30)
    assert state.get_object("gpuresets", "", "r1")["status"]["phase"] == "Succeeded"
    resets = [e for e in events if e.kind == "gpu_reset"]
    assert [(e.node, e.gpu) for e in resets] == [("gpu-node-001", 2)]
    with pytest.raises(Invalid):
        state.create_object(
            "gpuresets", "", {"metadata": {"name": "bad"}, "spec": {"nodeName": "gpu-node-001"}}
        )


def test_node_reboot_takes_minutes(state: KubeState, clock: Clock, events: list[KubeEvent]) -> None:
    state.add_deployment(training("train", replicas=2, gpus=8))
    state.create_object("nodereboots", "", {"metadata": {"name": "b1"}, "spec": {"nodeName": "gpu-node-001"}})
    advance(state, clock, 1)
    assert not state.node_ready("gpu-node-001")
    assert state.list_pods(node="gpu-node-001") == []
    advance(state, clock, 170)
    assert not state.node_ready("gpu-node-001")
    advance(state, clock, 15)
    assert state.node_ready("gpu-node-001")
    assert state.get_object("nodereboots", "", "b1")["status"]["phase"] == "Succeeded"
    kinds = [e.kind for e in events]
    assert kinds.index("node_reboot_started") < kinds.index("node_rebooted")
    advance(state, clock, 10)  # the evicted replica comes back on the rebooted node
    assert len(state.list_pods(node="gpu-node-001")) == 1


def test_training_pod_answers_checkpoint_request(state: KubeState, clock: Clock) -> None:
    state.add_deployment(training("train", 1, 8, **{CHECKPOINT_SECONDS_ANNOTATION: "45"}))
    (pod,) = state.list_pods(namespace="ml")
    name = pod["metadata"]["name"]

    def ask(p: dict[str, Any]) -> dict[str, Any]:
        p["metadata"]["annotations"][CHECKPOINT_REQUESTED] = "inc-7"
        return p

    state.update_object("pods", "ml", name, ask)
    advance(state, clock, 40)
    assert CHECKPOINT_DONE not in state.get_object("pods", "ml", name)["metadata"]["annotations"]
    advance(state, clock, 10)
    assert state.get_object("pods", "ml", name)["metadata"]["annotations"][CHECKPOINT_DONE] == "inc-7"


def test_daemonset_runs_on_every_ready_node(state: KubeState) -> None:
    state.add_daemonset(
        {
            "metadata": {"name": "dcgm-exporter", "namespace": "gpu-operator"},
            "spec": {
                "selector": {"matchLabels": {"app": "dcgm"}},
                "template": {"metadata": {"labels": {"app": "dcgm"}}, "spec": {}},
            },
        }
    )
    state.add_node("gpu-node-003", 8)
    pods = state.list_pods(namespace="gpu-operator")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["gpu-node-001", "gpu-node-002", "gpu-node-003"]


def test_listener_may_call_back_into_state(state: KubeState) -> None:
    seen: list[bool] = []
    state.subscribe(lambda e: seen.append(state.node_schedulable(e.node or "")))
    state.update_object("nodes", "", "gpu-node-001", lambda n: {**n, "spec": {"unschedulable": True}})
    assert seen == [False]


def test_unhealthy_gpu_leaves_allocatable(state: KubeState, clock: Clock) -> None:
    state.set_gpu_healthy("gpu-node-001", 0, False)
    assert state.get_node("gpu-node-001")["status"]["allocatable"]["nvidia.com/gpu"] == "7"
    state.set_gpu_healthy("gpu-node-002", 0, False)
    state.create_object(
        "pods",
        "ml",
        {
            "metadata": {"name": "big"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 8}}}]},
        },
    )
    advance(state, clock, 10)
    assert "nodeName" not in state.get_object("pods", "ml", "big")["spec"]
    state.set_gpu_healthy("gpu-node-001", 0, True)
    advance(state, clock, 10)
    assert state.get_object("pods", "ml", "big")["spec"]["nodeName"] == "gpu-node-001"


def test_deleting_an_owner_removes_its_pods(state: KubeState, clock: Clock) -> None:
    state.add_deployment(training("train", replicas=2, gpus=4))
    state.add_daemonset(
        {
            "metadata": {"name": "dcgm", "namespace": "gpu-operator"},
            "spec": {"template": {"metadata": {"labels": {"app": "dcgm"}}}},
        }
    )
    state.delete_object("deployments", "ml", "train")
    state.delete_object("daemonsets", "gpu-operator", "dcgm")
    advance(state, clock, 40)
    assert state.list_pods() == []
    assert state.gpu_assignments() == {}


def test_twin_records_kubernetes_events(state: KubeState, clock: Clock) -> None:
    state.add_deployment(training("train", replicas=1, gpus=8))
    (pod,) = state.list_pods(namespace="ml")
    state.evict("ml", pod["metadata"]["name"])
    state.set_node_ready("gpu-node-002", False)
    state.create_object("nodereboots", "", {"metadata": {"name": "b"}, "spec": {"nodeName": "gpu-node-001"}})
    advance(state, clock, 200)
    reasons = [(e["involvedObject"]["name"], e["reason"]) for e in state.list_objects("events")[0]]
    assert (pod["metadata"]["name"], "Scheduled") in reasons
    assert (pod["metadata"]["name"], "Killing") in reasons
    assert ("gpu-node-002", "NodeNotReady") in reasons
    assert ("gpu-node-001", "Rebooting") in reasons and ("gpu-node-001", "Rebooted") in reasons
    unschedulable = [r for r in reasons if r[1] == "FailedScheduling"]
    assert unschedulable  # the replacement found no Ready node while node-001 rebooted and node-002 was down


def test_events_are_capped(clock: Clock) -> None:
    state = KubeState(clock, max_events=5)
    for i in range(4):
        state.add_node(f"gpu-node-00{i}", 8)
        state.set_node_ready(f"gpu-node-00{i}", False)
        state.set_node_ready(f"gpu-node-00{i}", True)
    events = state.list_objects("events")[0]
    assert len(events) == 5
    assert events and all(e["involvedObject"]["name"] != "gpu-node-000" for e in events)


def test_bound_pod_starts_only_once_its_node_is_ready(state: KubeState, clock: Clock) -> None:
    state.create_object("pods", "ml", {"metadata": {"name": "p"}, "spec": {"nodeName": "gpu-node-002"}})
    state.set_node_ready("gpu-node-002", False)
    advance(state, clock, 30)
    assert state.get_object("pods", "ml", "p")["status"]["phase"] == "Pending"
    state.set_node_ready("gpu-node-002", True)
    advance(state, clock, 1)
    assert state.get_object("pods", "ml", "p")["status"]["phase"] == "Running"


def test_unready_pod_eviction_follows_the_unhealthy_pod_policy(state: KubeState, clock: Clock) -> None:
    state.add_deployment(training("train", replicas=2, gpus=4))
    state.add_pdb(
        {
            "metadata": {"name": "train", "namespace": "ml"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "train"}}},
        }
    )
    first, second = (p["metadata"]["name"] for p in state.list_pods(namespace="ml"))
    state.fail_pod("ml", first, "Error")  # its replacement is still starting: the budget is unhealthy
    (starting,) = [p for p in state.list_pods(namespace="ml") if p["status"]["phase"] == "Pending"]
    with pytest.raises(DisruptionBudgetBlocked):
        state.evict("ml", starting["metadata"]["name"])

    def always(pdb: dict[str, Any]) -> dict[str, Any]:
        pdb["spec"]["unhealthyPodEvictionPolicy"] = "AlwaysAllow"
        return pdb

    state.update_object("poddisruptionbudgets", "ml", "train", always)
    state.evict("ml", starting["metadata"]["name"])
    with pytest.raises(DisruptionBudgetBlocked):
        state.evict("ml", second)


def test_grace_period_is_exact_in_simulated_time(state: KubeState, clock: Clock) -> None:
    state.add_pod({"metadata": {"name": "p"}, "spec": {"nodeName": "gpu-node-001"}})
    clock.t += 0.75
    state.delete_object("pods", "default", "p", grace_seconds=10)
    advance(state, clock, 9.9, step=0.1)
    assert state.get_object("pods", "default", "p")["metadata"]["deletionGracePeriodSeconds"] == 10
    advance(state, clock, 0.1, step=0.1)
    with pytest.raises(NotFound):
        state.get_object("pods", "default", "p")


def test_work_that_stays_inside_a_node_lands_under_the_port_taint_and_a_multi_node_job_does_not(
        state: KubeState, clock: Clock) -> None:
    """A node whose one InfiniBand port waits for repair serves, under gpuops.io/fabric-degraded, the twin's work
    that never crosses the port (a replica, a one-node job); a multi-node job's worker waits for another node."""
    from simulator.scenario import InferenceWorkload, TrainingWorkload
    from simulator.workloads import inference_deployment, training_pod

    state.update_object("nodes", "", "gpu-node-001", lambda n: {**n, "spec": {**n["spec"], "taints": [
        {"key": "gpuops.io/fabric-degraded", "value": "mlx5_3", "effect": "NoSchedule"}]}})
    state.update_object("nodes", "", "gpu-node-002", lambda n: {**n, "spec": {**n["spec"], "unschedulable": True}})
    gang = TrainingWorkload(type="training", name="pretrain", nodes=2)
    solo = TrainingWorkload(type="training", name="finetune", nodes=1)
    serve = InferenceWorkload(type="inference", name="chat", replicas=2)
    state.add_pod(training_pod(gang, 0, 2, None))  # room for it beside the others: only the taint keeps it off
    state.add_pod(training_pod(solo, 0, 4, None))
    state.add_deployment(inference_deployment(serve, "uid-chat"))
    advance(state, clock, 30)
    where = {pod: node for (node, _), (pod, _, _) in state.gpu_assignments().items()}
    assert "pretrain-worker-0" not in where
    assert where["finetune-worker-0"] == "gpu-node-001"
    assert sorted(node for pod, node in where.items() if pod.startswith("chat-")) == ["gpu-node-001"] * 2
