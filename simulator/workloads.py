"""Workloads on the twin: multi-node training jobs, inference deployments, idle capacity.

Training jobs are gang-scheduled: one pod per node holding all its GPUs, near-identical load on
every GPU, short dips at checkpoints, and a stall of the whole job while any pod is missing. The
twin plays the job controller: a training pod that stops is recreated (pending) after a restart
delay, and the Kubernetes state's scheduler places it where capacity allows. Inference runs as
Deployments whose per-replica load follows a diurnal request curve divided by the replica count.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.behaviour import WorkloadBehaviour
from simulator.healthy_spec import BatchWorkload, NotebookWorkload
from simulator.kube.objects import STAYS_IN_NODE, generated_suffix
from simulator.kube.state import CHECKPOINT_SECONDS_ANNOTATION, GPU_ANNOTATION, WORKLOAD_LABEL
from simulator.physics import Load
from simulator.replay import ReplayFleet
from simulator.scenario import InferenceWorkload, Scenario, TrainingWorkload, Workload, node_name

TRAINING_NAMESPACE = "training"
INFERENCE_NAMESPACE = "inference"
TRAINING_RESTART_DELAY_S = 120.0


def default_workloads(scenario: Scenario, rng: np.random.Generator) -> list[Workload]:
    """A deterministic mix for a scenario that names none: ~60% of nodes in training jobs of 2–4
    nodes, ~25% of GPUs serving inference, the rest idle. A replay's recording is its scenario's workload:
    then there is no mix."""
    if scenario.replay is not None:
        return []
    nodes, gpus = scenario.fleet.nodes, scenario.fleet.gpus_per_node
    out: list[Workload] = []
    training_nodes = int(nodes * 0.6) if nodes >= 4 else 0
    i = 0
    while training_nodes >= 2:
        size = min(training_nodes, int(rng.integers(2, 5)))
        out.append(
            TrainingWorkload(
                type="training",
                name=f"pretrain-{i:02d}",
                nodes=size,
                intensity=float(rng.uniform(0.88, 0.98)),
            )
        )
        training_nodes -= size
        i += 1
    inference_gpus = max(1, int(nodes * gpus * 0.25))
    # About a dozen deployments at any fleet size: large fleets get more replicas, not more services.
    per_service = max(4, inference_gpus // 12)
    j = 0
    while inference_gpus > 0:
        per = int(rng.choice([1, 2])) if gpus > 1 else 1
        want = min(per_service, inference_gpus) // per
        replicas = max(1, int(want * rng.uniform(0.6, 1.0)))
        out.append(
            InferenceWorkload(
                type="inference",
                name=f"serve-{j:02d}",
                replicas=replicas,
                gpus_per_replica=per,
                peak_load=float(rng.uniform(0.7, 0.92)),
                trough_load=float(rng.uniform(0.15, 0.35)),
                peak_hour_utc=float(rng.uniform(13, 19)),
            )
        )
        inference_gpus -= replicas * per
        j += 1
    return out


@dataclass
class WorkloadBook:
    """Per-workload constants and the rows each workload holds right now."""

    specs: dict[str, Workload]
    rng: np.random.Generator
    rows: dict[str, list[int]] = field(default_factory=dict)
    running_pods: dict[str, int] = field(default_factory=dict)
    overload: dict[str, float] = field(default_factory=dict)
    demand_peak: dict[str, float] = field(default_factory=dict)
    """While a deployment is overloaded: the most its replicas were asked for, as a share of what they serve
    (above 1, requests queue)."""
    checkpoint_phase: dict[str, float] = field(default_factory=dict)
    fb_mib: dict[str, float] = field(default_factory=dict)
    behaviour: WorkloadBehaviour | None = None  # a healthy fleet's phases (simulator/behaviour.py), or none
    replay: ReplayFleet | None = None  # recorded pods replayed (simulator/replay.py), or none

    def __post_init__(self) -> None:
        for name, spec in self.specs.items():
            self.checkpoint_phase[name] = float(self.rng.uniform(0, 1))
            self.fb_mib[name] = float(
                self.rng.uniform(58_000, 76_000)
                if isinstance(spec, TrainingWorkload)
                else self.rng.uniform(30_000, 70_000)
            )

    def demand(self, t: float, n: int) -> Load:
        """The load every GPU carries at time `t`."""
        out = Load.idle(n)
        for name, rows in self.rows.items():
            spec = self.specs.get(name)
            if spec is None or not rows:
                continue
            idx = np.asarray(rows)
            if isinstance(spec, TrainingWorkload):
                self._training(spec, t, idx, out)
            elif isinstance(spec, InferenceWorkload):
                self._inference(spec, t, idx, out)
            elif self.behaviour is not None and isinstance(spec, NotebookWorkload):
                self.behaviour.notebook(spec, t, idx, out)
            elif self.behaviour is not None and isinstance(spec, BatchWorkload):
                self.behaviour.batch(spec, idx, self.fb_mib[spec.name], out)
        if self.replay is not None:
            self.replay.fill(t, self.rows, out)
        return out

    def _training(self, spec: TrainingWorkload, t: float, idx: Any, out: Load) -> None:
        complete = self.running_pods.get(spec.name, 0) >= spec.nodes
        if self.behaviour is not None and self.behaviour.shapes_training:
            self.behaviour.training(
                spec, t, idx, complete, self.checkpoint_phase[spec.name], self.fb_mib[spec.name], out
            )
            return
        level = spec.intensity if complete else 0.0
        period = spec.checkpoint_every
        if complete and period > 0:
            phase = (t / period + self.checkpoint_phase[spec.name]) % 1.0
            if phase * period < 90.0:  # a checkpoint write: compute pauses for about 90 s
                level *= 0.08
        jitter = self.rng.normal(0, 0.004) + self.rng.normal(0, 0.003, len(idx))
        out.load[idx] = np.clip(level * (1.0 + jitter), 0, 1) if level > 0 else 0.0
        out.fb_mib[idx] = self.fb_mib[spec.name] * (1.0 + self.rng.normal(0, 0.002, len(idx)))
        out.tensor_share[idx] = 0.55
        out.dram_share[idx] = 0.35
        out.nvlink_share[idx] = 0.4

    def _inference(self, spec: InferenceWorkload, t: float, idx: Any, out: Load) -> None:
        hour = (t % 86400.0) / 3600.0
        curve = 0.5 * (1.0 + math.cos(2 * math.pi * (hour - spec.peak_hour_utc) / 24.0))
        base = spec.trough_load + (spec.peak_load - spec.trough_load) * curve
        if self.behaviour is not None and self.behaviour.shapes_inference:
            base *= self.behaviour.inference_factor(spec.name, t)
        replicas_now = max(1, self.running_pods.get(spec.name, 0))
        level = base * self.overload.get(spec.name, 1.0) * max(spec.replicas, 1) / replicas_now
        if self.overload.get(spec.name, 1.0) != 1.0:
            self.demand_peak[spec.name] = max(self.demand_peak.get(spec.name, 0.0), level)
        noise = self.rng.normal(0, 0.03, len(idx))
        out.load[idx] = np.clip(level * (1.0 + noise), 0.02, 1.0)
        out.fb_mib[idx] = self.fb_mib[spec.name] + 2000.0 * min(level, 1.0)
        out.tensor_share[idx] = 0.35
        out.dram_share[idx] = 0.6
        out.nvlink_share[idx] = 0.05


def training_pod(
    job: TrainingWorkload, index: int, gpus_per_node: int, node: str | None, generation: int = 0
) -> dict[str, Any]:
    """The Pod JSON of one training worker; bound to `node` when given, else pending. A restarted worker gets
    a new pod whose name ends in generated characters, as a Job controller names its retries."""
    name = f"{job.name}-worker-{index}" + (f"-{generated_suffix(f'{job.name}/{index}/{generation}')}"
                                           if generation else "")
    annotations = {CHECKPOINT_SECONDS_ANNOTATION: "60"}
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "trainer",
                "image": "nvcr.io/nvidia/pytorch:24.08-py3",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus_per_node)}},
            }
        ],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 60,
    }
    if job.nodes == 1:
        spec["tolerations"] = [dict(STAYS_IN_NODE)]
    if node is not None:
        spec["nodeName"] = node
        annotations[GPU_ANNOTATION] = ",".join(str(g) for g in range(gpus_per_node))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": TRAINING_NAMESPACE,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pods/{TRAINING_NAMESPACE}/{name}")),
            "labels": {WORKLOAD_LABEL: job.name, "job-index": str(index)},
            "annotations": annotations,
            # Owned like a training operator's pods (Kubeflow's PyTorchJob), so drains treat them as managed;
            # the twin plays that operator and restarts the job's workers itself.
            "ownerReferences": [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": job.name,
                                 "uid": f"pytorchjob-{job.name}", "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": spec,
    }


def inference_deployment(spec: InferenceWorkload, uid: str) -> dict[str, Any]:
    """The apps/v1 Deployment JSON of an inference workload."""
    labels = {WORKLOAD_LABEL: spec.name, "app": spec.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.name, "namespace": INFERENCE_NAMESPACE, "labels": labels, "uid": uid},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {"app": spec.name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "vllm/vllm-openai:v0.6.3",
                            "resources": {"limits": {"nvidia.com/gpu": str(spec.gpus_per_replica)}},
                        }
                    ],
                    "tolerations": [dict(STAYS_IN_NODE)],
                },
            },
        },
    }


def workload_pdb(spec: TrainingWorkload | InferenceWorkload) -> dict[str, Any]:
    """The policy/v1 PodDisruptionBudget a workload's `max_unavailable` asks for, over all its pods."""
    namespace = TRAINING_NAMESPACE if isinstance(spec, TrainingWorkload) else INFERENCE_NAMESPACE
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{spec.name}-pdb", "namespace": namespace},
        "spec": {"maxUnavailable": spec.max_unavailable, "selector": {"matchLabels": {WORKLOAD_LABEL: spec.name}}},
    }


def training_placement(jobs: list[TrainingWorkload]) -> dict[str, list[str]]:
    """Nodes of each training job: consecutive blocks from gpu-node-001 (a rack-local gang)."""
    placement: dict[str, list[str]] = {}
    cursor = 0
    for job in jobs:
        placement[job.name] = [node_name(cursor + i) for i in range(job.nodes)]
        cursor += job.nodes
    return placement


def inference_pod(
    spec: InferenceWorkload, deployment: dict[str, Any], suffix: str, node: str, gpus: list[int], uid: str
) -> dict[str, Any]:
    """A replica of `deployment` already bound to `node` (what its controller and scheduler would make)."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{spec.name}-{suffix}",
            "namespace": INFERENCE_NAMESPACE,
            "uid": uid,
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {GPU_ANNOTATION: ",".join(str(g) for g in gpus)},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": spec.name,
                    "uid": deployment["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {**template["spec"], "nodeName": node},
    }
