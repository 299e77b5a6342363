"""The blast radius of a step is computed from what runs on the node: a multi-node training job stops as a whole,
so all its GPUs count, not only the ones on this node."""

from __future__ import annotations

import pytest

from connectors.kubernetes import NodeInfo, PodInfo
from runbooks.blast import Workload, fault_hit, plan_blast_radius, read_workload, step_blast_radius
from runbooks.settings import RunbookSettings

SETTINGS = RunbookSettings(restart_overhead_s=600, assumed_checkpoint_interval_s=3600, expected_reboot_s=900,
                           expected_gpu_reset_s=120)
CHECKPOINTS = {"gpuops.io/checkpointable": "true"}


def pod(name: str, node: str, gpus: int, *, namespace: str = "training", owner: str | None = "PyTorchJob",
        owner_name: str = "pretrain-00", annotations: dict[str, str] | None = None, daemonset: bool = False,
        phase: str = "Running") -> PodInfo:
    return PodInfo(namespace=namespace, name=name, node=node, phase=phase, ready=True, owner_kind=owner,
                   owner_name=owner_name, is_daemonset=daemonset, is_mirror=False, uses_empty_dir=False,
                   terminating=False, gpu_count=gpus, gpu_indices=tuple(range(gpus)),
                   annotations=annotations if annotations is not None else CHECKPOINTS)


def node(name: str, capacity: int = 8, allocatable: int = 7) -> NodeInfo:
    return NodeInfo(name=name, unschedulable=False, conditions=(), taints=(), gpu_capacity=capacity,
                    gpu_allocatable=allocatable)


def pretrain_on_three_nodes() -> Workload:
    """gpu-node-003 runs one worker of a 24-GPU job (8 GPUs on each of three nodes), a DaemonSet pod, and a small
    inference pod; other nodes run the job's other workers and an unrelated job."""
    here = [pod("pretrain-00-worker-1", "gpu-node-003", 8),
            pod("dcgm-exporter-x2k4z", "gpu-node-003", 0, namespace="gpu-operator", owner="DaemonSet",
                owner_name="dcgm-exporter", daemonset=True, annotations={}),
            pod("finished-0", "gpu-node-003", 1, phase="Succeeded")]
    others = {"gpu-node-002": [pod("pretrain-00-master-0", "gpu-node-002", 8)],
              "gpu-node-004": [pod("pretrain-00-worker-2", "gpu-node-004", 8),
                               pod("other-0", "gpu-node-004", 4, owner_name="other")]}
    return read_workload(node("gpu-node-003"), here, others, SETTINGS)


def test_a_drain_stops_the_whole_multi_node_job_and_counts_all_its_gpus() -> None:
    workload = pretrain_on_three_nodes()
    assert [p.name for p in workload.pods] == ["pretrain-00-worker-1", "dcgm-exporter-x2k4z"]  # finished pod left
    assert sorted(p.name for p in workload.job_pods) == ["pretrain-00-master-0", "pretrain-00-worker-2"]
    blast = step_blast_radius("drain_node", workload, SETTINGS)
    (job,) = blast.jobs
    assert job.job == "training/pretrain-00" and job.owner == "PyTorchJob/pretrain-00"
    assert (job.gpus_here, job.gpus_total) == (8, 24)
    assert job.nodes == ("gpu-node-002", "gpu-node-003", "gpu-node-004")
    assert job.checkpoints and job.restore_s == 600
    assert blast.pods_stopped == ("training/pretrain-00-worker-1",)  # the DaemonSet pod stays
    assert blast.gpu_hours_at_risk == pytest.approx(24 * 600 / 3600)
    assert blast.gpus_out == 8 and blast.outage_s == 0


def test_a_reboot_adds_the_node_away_and_a_cordon_stops_nothing() -> None:
    workload = pretrain_on_three_nodes()
    reboot = step_blast_radius("reboot_node", workload, SETTINGS)
    assert reboot.gpu_hours_at_risk == pytest.approx(24 * 600 / 3600 + 8 * 900 / 3600)
    cordon = step_blast_radius("cordon_node", workload, SETTINGS)
    assert cordon.unschedulable_only and cordon.jobs == () and cordon.gpu_hours_at_risk == 0
    assert cordon.gpus_out == 8
    whole = plan_blast_radius([cordon, step_blast_radius("drain_node", workload, SETTINGS), reboot])
    assert whole is not None
    assert [j.job for j in whole.jobs] == ["training/pretrain-00"]  # counted once across the steps
    assert whole.gpu_hours_at_risk == pytest.approx(reboot.gpu_hours_at_risk)
    assert not whole.unschedulable_only
    assert plan_blast_radius([]) is None


def test_a_job_without_checkpoints_loses_an_assumed_hour_and_a_gpu_reset_stops_only_its_gpu() -> None:
    here = [pod("infer-0", "gpu-node-001", 1, namespace="serve", owner="StatefulSet", owner_name="infer",
                annotations={})]
    workload = read_workload(node("gpu-node-001"), here, {}, SETTINGS)
    blast = step_blast_radius("drain_node", workload, SETTINGS)
    assert not blast.jobs[0].checkpoints and blast.gpu_hours_at_risk == pytest.approx(1.0)
    assert step_blast_radius("reset_gpu", workload, SETTINGS, gpu=5).jobs == ()  # nothing on GPU 5
    on_zero = step_blast_radius("reset_gpu", workload, SETTINGS, gpu=0)
    assert on_zero.pods_stopped == ("serve/infer-0",)
    assert on_zero.gpu_hours_at_risk == pytest.approx(1.0 + 120 / 3600, abs=1e-3)  # rounded to 3 places


def test_a_workload_survives_its_json_round_trip() -> None:
    workload = pretrain_on_three_nodes()
    assert Workload.from_json(workload.to_json()) == workload


def test_a_job_the_fault_already_stopped_is_told_apart_from_what_the_plan_stops() -> None:
    """As in the demo: XID 79 killed the job's worker on gpu-node-003 and its controller restarted it on
    gpu-node-007 (the node has 7 GPUs left, too few); telemetry still names the dead pod on GPU 2."""
    others = {"gpu-node-001": [pod("pretrain-00-worker-0", "gpu-node-001", 8)],
              "gpu-node-002": [pod("pretrain-00-worker-1", "gpu-node-002", 8)],
              "gpu-node-007": [pod("pretrain-00-worker-2-wbrfv", "gpu-node-007", 8)]}
    workload = read_workload(node("gpu-node-003"), [], others, SETTINGS, ["training/pretrain-00-worker-2"])
    (hit,) = fault_hit(workload, SETTINGS)
    assert hit.job == "training/pretrain-00" and hit.pods_here == ("training/pretrain-00-worker-2",)
    assert hit.gpus_total == 24 and hit.nodes == ("gpu-node-001", "gpu-node-002", "gpu-node-007")
    assert hit.gpu_hours_at_risk == pytest.approx(4.0)
    reboot = step_blast_radius("reboot_node", workload, SETTINGS)
    assert reboot.jobs == () and reboot.gpu_hours_at_risk == pytest.approx(2.0)  # only the node away
    assert fault_hit(pretrain_on_three_nodes(), SETTINGS) == ()  # a job still running here is not "hit"
