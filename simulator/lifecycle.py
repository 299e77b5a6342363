"""Workloads coming and going on a healthy fleet: notebooks, batch runs, training jobs that end and start.

The twin plays their controllers: a notebook's StatefulSet brings its pod back after a drain, a batch
Job runs its pods from `at` for `length` (recreating any that a drain stopped), and a training queue
ends jobs after their run, relaunches some at another size, and admits new jobs when whole nodes are
free (as Kueue or Volcano would, rather than leaving pods pending).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.healthy_spec import BatchWorkload, NotebookWorkload, TrainingBehaviour
from simulator.kube.objects import STAYS_IN_NODE, generated_suffix
from simulator.kube.state import WORKLOAD_LABEL, KubeEvent
from simulator.scenario import TrainingWorkload
from simulator.workloads import TRAINING_NAMESPACE, training_pod

if TYPE_CHECKING:
    from simulator.twin import Twin

NOTEBOOK_NAMESPACE = "notebooks"
BATCH_NAMESPACE = "batch"
RECREATE_DELAY_S = 30.0
ADMISSION_RETRY_S = 1800.0


def _pod(name: str, namespace: str, workload: str, gpus: int, container: str, image: str,
         owner: tuple[str, str, str]) -> dict[str, Any]:
    """A pending Pod asking for `gpus` GPUs, owned by `owner` (apiVersion, kind, name)."""
    api, kind, owner_name = owner
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pods/{namespace}/{name}")),
            "labels": {WORKLOAD_LABEL: workload},
            "ownerReferences": [{"apiVersion": api, "kind": kind, "name": owner_name,
                                 "uid": f"{kind.lower()}-{owner_name}", "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {
            "containers": [{"name": container, "image": image,
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
            "restartPolicy": "Always" if kind == "StatefulSet" else "Never",
            "tolerations": [dict(STAYS_IN_NODE)],  # a notebook or a batch pod stays inside its node
        },
    }


def notebook_pod(spec: NotebookWorkload, user: int) -> dict[str, Any]:
    """A Kubeflow notebook server's pod: StatefulSet `<name>-<user>`, pod `<name>-<user>-0`, one GPU."""
    owner = f"{spec.name}-{user}"
    return _pod(f"{owner}-0", NOTEBOOK_NAMESPACE, spec.name, 1, "notebook",
                "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.8.0", ("apps/v1", "StatefulSet", owner))


def batch_pod(spec: BatchWorkload, index: int, generation: int) -> dict[str, Any]:
    """One pod of a batch inference Job; a retry gets a new generated name, as the Job controller does."""
    name = f"{spec.name}-{index}-{generated_suffix(f'{spec.name}/{index}/{generation}')}"
    return _pod(name, BATCH_NAMESPACE, spec.name, spec.gpus_per_pod, "offline-inference",
                "vllm/vllm-openai:v0.6.3", ("batch/v1", "Job", spec.name))


@dataclass
class WorkloadLifecycle:
    """Creates, recreates and ends the pods of notebooks, batch runs and churning training jobs."""

    training: TrainingBehaviour
    rng: np.random.Generator
    notebooks: list[NotebookWorkload] = field(default_factory=list)
    batches: list[BatchWorkload] = field(default_factory=list)
    job_end: dict[str, float] = field(default_factory=dict)
    next_arrival: float = math.inf
    jobs_submitted: int = 0
    _recreate: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _batch_state: dict[str, str] = field(default_factory=dict)  # name -> waiting | running | done
    _generation: dict[tuple[str, int], int] = field(default_factory=dict)

    def attach(self, twin: Twin) -> None:
        """Start the notebooks and draw when the initial training jobs end (if jobs churn at all)."""
        for spec in self.notebooks:
            for user in range(spec.users):
                twin.kube.add_pod(notebook_pod(spec, user))
        for batch in self.batches:
            self._batch_state[batch.name] = "waiting"
        if self.training.jobs_per_day > 0:
            for name, workload in twin.book.specs.items():
                if isinstance(workload, TrainingWorkload):
                    self.job_end[name] = twin.t + float(self.rng.uniform(0, 1)) * self._job_length()
            self.next_arrival = twin.t + self._interarrival()

    def _job_length(self) -> float:
        return float(self.rng.uniform(*self.training.job_length))

    def _interarrival(self) -> float:
        return float(self.rng.exponential(86400.0 / self.training.jobs_per_day))

    def on_event(self, event: KubeEvent, now: float) -> None:
        """A notebook or batch pod stopped before its time: its controller makes a new one."""
        if event.kind != "pod_stopped" or event.pod is None:
            return
        name = event.detail.get("workload")
        if event.namespace == NOTEBOOK_NAMESPACE:
            spec = next((s for s in self.notebooks if s.name == name), None)
            if spec is not None:
                user = int(event.pod.rsplit("-", 2)[1])
                self._recreate.append((now + RECREATE_DELAY_S, notebook_pod(spec, user)))
        elif event.namespace == BATCH_NAMESPACE:
            batch = next((s for s in self.batches if s.name == name), None)
            if batch is not None and self._batch_state.get(batch.name) == "running":
                index = int(event.pod[len(batch.name) + 1:].split("-")[0])
                generation = self._generation.get((batch.name, index), 0) + 1
                self._generation[(batch.name, index)] = generation
                self._recreate.append((now + RECREATE_DELAY_S, batch_pod(batch, index, generation)))

    def step(self, t: float, twin: Twin) -> None:
        """Recreate due pods, start and end batch runs, end and admit training jobs."""
        due = [pod for at, pod in self._recreate if at <= t]
        self._recreate = [(at, pod) for at, pod in self._recreate if at > t]
        for pod in due:
            twin.kube.add_pod(pod)
        for spec in self.batches:
            self._step_batch(spec, t, twin)
        for name, end in sorted(self.job_end.items()):
            if end <= t:
                self._end_job(name, t, twin)
        if t >= self.next_arrival:
            self._admit(t, twin)

    def _step_batch(self, spec: BatchWorkload, t: float, twin: Twin) -> None:
        state = self._batch_state[spec.name]
        if state == "waiting" and t >= twin.start + spec.at:
            self._batch_state[spec.name] = "running"
            for index in range(spec.pods):
                twin.kube.add_pod(batch_pod(spec, index, 0))
        elif state == "running" and t >= twin.start + spec.at + spec.length:
            self._batch_state[spec.name] = "done"
            self._recreate = [(at, p) for at, p in self._recreate
                              if (p["metadata"]["labels"] or {}).get(WORKLOAD_LABEL) != spec.name]
            for pod in twin.kube.list_pods(namespace=BATCH_NAMESPACE):
                if pod["metadata"]["labels"].get(WORKLOAD_LABEL) == spec.name:
                    twin.kube.delete_object("pods", BATCH_NAMESPACE, pod["metadata"]["name"])

    def _end_job(self, name: str, t: float, twin: Twin) -> None:
        """The job finished its run: its pods go, its nodes idle; some relaunch at another size."""
        del self.job_end[name]
        spec = twin.book.specs.pop(name, None)
        twin.forget_restarts(name)
        for pod in twin.kube.list_pods(namespace=TRAINING_NAMESPACE):
            if pod["metadata"]["labels"].get(WORKLOAD_LABEL) == name:
                twin.kube.delete_object("pods", TRAINING_NAMESPACE, pod["metadata"]["name"])
        if isinstance(spec, TrainingWorkload) and self.rng.random() < self.training.resize_share:
            low, high = self.training.job_nodes
            size = int(self.rng.integers(low, high + 1))
            base = name.split("-r")[0] if "-r" in name else name
            self._submit(spec.model_copy(update={"name": f"{base}-r{self.jobs_submitted}", "nodes": size}),
                         t, twin)

    def _admit(self, t: float, twin: Twin) -> None:
        """Submit the next queued job if enough whole nodes are free, else look again later."""
        low, high = self.training.job_nodes
        size = int(self.rng.integers(low, high + 1))
        if self._free_nodes(twin) < size:
            self.next_arrival = t + ADMISSION_RETRY_S
            return
        job = TrainingWorkload(
            type="training", name=f"job-{self.jobs_submitted:03d}", nodes=size,
            intensity=float(self.rng.uniform(0.85, 0.98)),
            checkpoint_every=float(self.rng.choice([1800.0, 3600.0, 7200.0])),
        )
        self._submit(job, t, twin)
        self.next_arrival = t + self._interarrival()

    def _submit(self, job: TrainingWorkload, t: float, twin: Twin) -> None:
        self.jobs_submitted += 1
        book = twin.book
        book.specs[job.name] = job
        book.checkpoint_phase[job.name] = float(self.rng.uniform(0, 1))
        book.fb_mib[job.name] = float(self.rng.uniform(58_000, 76_000))
        self.job_end[job.name] = t + self._job_length()
        for index in range(job.nodes):
            twin.kube.add_pod(training_pod(job, index, twin.gpus_per_node, None))

    @staticmethod
    def _free_nodes(twin: Twin) -> int:
        """Ready, schedulable nodes with no GPU held by a running pod."""
        busy = {node for node, _ in twin.kube.gpu_assignments()}
        return sum(
            1 for node in twin.kube.list_nodes()
            if node["metadata"]["name"] not in busy
            and not node.get("spec", {}).get("unschedulable")
            and any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in node.get("status", {}).get("conditions") or [])
        )
