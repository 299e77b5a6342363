"""The blast radius of a step: which jobs and pods it stops, how many GPUs it takes out of service, and the
GPU-hours at risk, computed from what actually runs on the node (and, for a multi-node job, everywhere the job
runs: when one node's pods stop, the whole job stops and restarts).

GPU-hours at risk = for every job the step stops, all of that job's GPUs × its time to restore (the restart
overhead when it checkpoints, else an assumed checkpoint interval of lost work), plus, for a step that takes
the node away (a reboot, a GPU reset), the GPUs it takes away × the expected outage."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.kubernetes import NodeInfo, PodInfo
from domain.jobs import job_of
from runbooks.settings import RunbookSettings

MAX_JOB_PODS = 256  # a workload snapshot's bound on the pods of the node's jobs elsewhere
NODE_STEPS_STOPPING_PODS = frozenset({"drain_node", "reboot_node"})


@dataclass(frozen=True)
class WorkloadPod:
    """A pod as the blast radius needs it (and as an incident's evidence keeps it)."""

    namespace: str
    name: str
    node: str
    job: str
    owner: str            # "PyTorchJob/pretrain-00", or "" for a bare pod
    gpus: tuple[int, ...]
    gpu_count: int
    checkpoints: bool     # a training pod that checkpoints when asked
    stays: bool = False   # DaemonSet or mirror pod: a drain leaves it

    @classmethod
    def of(cls, pod: PodInfo, settings: RunbookSettings) -> WorkloadPod:
        owner = f"{pod.owner_kind}/{pod.owner_name}" if pod.owner_kind else ""
        return cls(namespace=pod.namespace, name=pod.name, node=pod.node or "", owner=owner,
                   job=job_of(pod.name, pod.namespace) or f"{pod.namespace}/{pod.name}",
                   gpus=tuple(pod.gpu_indices), gpu_count=pod.gpu_count,
                   checkpoints=any(m in pod.annotations for m in settings.checkpoint_marker_annotations),
                   stays=pod.is_daemonset or pod.is_mirror)

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "node": self.node, "job": self.job,
                "owner": self.owner, "gpus": list(self.gpus), "gpu_count": self.gpu_count,
                "checkpoints": self.checkpoints, "stays": self.stays}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkloadPod:
        return cls(namespace=str(data["namespace"]), name=str(data["name"]), node=str(data.get("node", "")),
                   job=str(data["job"]), owner=str(data.get("owner", "")),
                   gpus=tuple(int(g) for g in data.get("gpus", ())), gpu_count=int(data.get("gpu_count", 0)),
                   checkpoints=bool(data.get("checkpoints")), stays=bool(data.get("stays")))


@dataclass(frozen=True)
class Workload:
    """What ran on a node at one moment: its pods, its GPUs, and the pods of its jobs on other nodes."""

    node: str
    gpu_capacity: int
    gpu_allocatable: int
    pods: tuple[WorkloadPod, ...]             # on the node
    job_pods: tuple[WorkloadPod, ...] = ()    # the node's jobs' pods on other nodes
    seen_pods: tuple[str, ...] = ()           # "namespace/name" the node's GPUs reported in telemetry before

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "gpu_capacity": self.gpu_capacity, "gpu_allocatable": self.gpu_allocatable,
                "pods": [p.to_json() for p in self.pods], "job_pods": [p.to_json() for p in self.job_pods],
                "seen_pods": list(self.seen_pods)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Workload:
        return cls(node=str(data["node"]), gpu_capacity=int(data.get("gpu_capacity", 0)),
                   gpu_allocatable=int(data.get("gpu_allocatable", 0)),
                   pods=tuple(WorkloadPod.from_json(p) for p in data.get("pods", ())),
                   job_pods=tuple(WorkloadPod.from_json(p) for p in data.get("job_pods", ())),
                   seen_pods=tuple(str(p) for p in data.get("seen_pods", ())))


def _job_of_key(key: str) -> str:
    namespace, _, name = key.partition("/")
    return job_of(name, namespace) or key


def read_workload(node: NodeInfo, pods_here: Iterable[PodInfo], pods_by_node: Mapping[str, Iterable[PodInfo]],
                  settings: RunbookSettings, seen_pods: Iterable[str] = ()) -> Workload:
    """The workload of `node` from the cluster's pods (`pods_by_node`: the other nodes' pods); `seen_pods` are
    the pods ("namespace/name") the node's GPUs reported before, whose jobs are followed elsewhere too (a pod the
    fault killed is gone from the node, and its job restarted on another)."""
    here = tuple(WorkloadPod.of(p, settings) for p in pods_here if p.phase in ("Running", "Pending", ""))
    seen = tuple(sorted(set(seen_pods)))
    jobs = {p.job for p in here if not p.stays} | {_job_of_key(k) for k in seen}
    elsewhere: list[WorkloadPod] = []
    for other, pods in pods_by_node.items():
        if other == node.name:
            continue
        elsewhere += [w for p in pods if p.phase in ("Running", "Pending", "")
                      and (w := WorkloadPod.of(p, settings)).job in jobs]
    return Workload(node.name, node.gpu_capacity, node.gpu_allocatable, here, tuple(elsewhere[:MAX_JOB_PODS]),
                    seen)


@dataclass(frozen=True)
class JobImpact:
    """One job a step stops."""

    job: str
    owner: str
    pods_here: tuple[str, ...]
    gpus_here: int
    gpus_total: int
    nodes: tuple[str, ...]
    checkpoints: bool
    restore_s: float

    @property
    def gpu_hours_at_risk(self) -> float:
        return round(self.gpus_total * self.restore_s / 3600, 3)


@dataclass(frozen=True)
class BlastRadius:
    """What one step (or a whole plan) costs, in the terms an on-call engineer weighs."""

    node: str
    gpus_out: int                         # GPUs the step takes out of service or scheduling
    outage_s: float                       # how long those GPUs are away (0: only unschedulable)
    jobs: tuple[JobImpact, ...] = ()
    pods_stopped: tuple[str, ...] = ()
    unschedulable_only: bool = False      # a cordon: nothing stops, no new work lands
    notes: tuple[str, ...] = field(default=())

    @property
    def jobs_gpu_hours(self) -> float:
        return round(sum(j.gpu_hours_at_risk for j in self.jobs), 3)

    @property
    def outage_gpu_hours(self) -> float:
        return round(self.gpus_out * self.outage_s / 3600, 3)

    @property
    def gpu_hours_at_risk(self) -> float:
        return round(self.jobs_gpu_hours + self.outage_gpu_hours, 3)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "gpus_out": self.gpus_out, "outage_s": self.outage_s,
                "unschedulable_only": self.unschedulable_only, "pods_stopped": list(self.pods_stopped),
                "gpu_hours_at_risk": self.gpu_hours_at_risk, "jobs_gpu_hours": self.jobs_gpu_hours,
                "outage_gpu_hours": self.outage_gpu_hours, "notes": list(self.notes),
                "jobs": [{"job": j.job, "owner": j.owner, "pods_here": list(j.pods_here), "gpus_here": j.gpus_here,
                          "gpus_total": j.gpus_total, "nodes": list(j.nodes), "checkpoints": j.checkpoints,
                          "restore_s": j.restore_s, "gpu_hours_at_risk": j.gpu_hours_at_risk} for j in self.jobs]}


def _jobs_stopped(stopped: Sequence[WorkloadPod], workload: Workload, settings: RunbookSettings) -> list[JobImpact]:
    everywhere = [*workload.pods, *workload.job_pods]
    impacts = []
    for job in sorted({p.job for p in stopped}):
        mine = [p for p in everywhere if p.job == job and not p.stays]
        here = [p for p in stopped if p.job == job]
        checkpoints = all(p.checkpoints for p in mine)
        impacts.append(JobImpact(
            job=job, owner=next((p.owner for p in here if p.owner), ""),
            pods_here=tuple(f"{p.namespace}/{p.name}" for p in here), gpus_here=sum(p.gpu_count for p in here),
            gpus_total=sum(p.gpu_count for p in mine), nodes=tuple(sorted({p.node for p in mine if p.node})),
            checkpoints=checkpoints,
            restore_s=settings.restart_overhead_s if checkpoints else settings.assumed_checkpoint_interval_s))
    return impacts


def fault_hit(workload: Workload, settings: RunbookSettings) -> tuple[JobImpact, ...]:
    """The jobs the fault itself already stopped: seen on the node's GPUs before, with no pod running there now
    (the fault killed it; its controller may have restarted it elsewhere). Their GPU-hours are lost to the fault,
    whatever the plan does."""
    running_here = {p.job for p in workload.pods}
    gone: dict[str, list[str]] = {}
    for key in workload.seen_pods:
        job = _job_of_key(key)
        if job not in running_here:
            gone.setdefault(job, []).append(key)
    impacts = []
    for job, keys in sorted(gone.items()):
        mine = [p for p in workload.job_pods if p.job == job and not p.stays]
        checkpoints = bool(mine) and all(p.checkpoints for p in mine)
        impacts.append(JobImpact(
            job=job, owner=next((p.owner for p in mine if p.owner), ""), pods_here=tuple(keys), gpus_here=0,
            gpus_total=sum(p.gpu_count for p in mine), nodes=tuple(sorted({p.node for p in mine if p.node})),
            checkpoints=checkpoints,
            restore_s=settings.restart_overhead_s if checkpoints else settings.assumed_checkpoint_interval_s))
    return tuple(impacts)


def step_blast_radius(runbook: str, workload: Workload, settings: RunbookSettings,
                      gpu: int | None = None) -> BlastRadius:
    """The blast radius of running `runbook` on the workload's node (`gpu` for a GPU-level step)."""
    movable = [p for p in workload.pods if not p.stays]
    if runbook in NODE_STEPS_STOPPING_PODS:
        outage = settings.expected_reboot_s if runbook == "reboot_node" else 0.0
        return BlastRadius(workload.node, workload.gpu_capacity, outage,
                           tuple(_jobs_stopped(movable, workload, settings)),
                           tuple(f"{p.namespace}/{p.name}" for p in movable))
    if runbook == "reset_gpu" and gpu is not None:
        on_gpu = [p for p in movable if gpu in p.gpus]
        return BlastRadius(workload.node, 1, settings.expected_gpu_reset_s,
                           tuple(_jobs_stopped(on_gpu, workload, settings)),
                           tuple(f"{p.namespace}/{p.name}" for p in on_gpu))
    if runbook in ("cordon_node", "taint_node"):
        return BlastRadius(workload.node, workload.gpu_capacity, 0.0, unschedulable_only=True,
                           notes=("running pods keep running; no new work lands on the node",))
    return BlastRadius(workload.node, 0, 0.0, notes=("stops no pod and takes no GPU out of service",))


def plan_blast_radius(steps: Sequence[BlastRadius]) -> BlastRadius | None:
    """The whole plan's blast radius: every job any step stops (counted once), the most GPUs any step takes
    away, and the longest outage."""
    if not steps:
        return None
    jobs: dict[str, JobImpact] = {}
    for step in steps:
        for job in step.jobs:
            jobs.setdefault(job.job, job)
    pods = tuple(dict.fromkeys(p for s in steps for p in s.pods_stopped))
    worst = max(steps, key=lambda s: (s.outage_s * s.gpus_out, s.gpus_out))
    return BlastRadius(steps[0].node, worst.gpus_out, worst.outage_s, tuple(jobs.values()), pods,
                       unschedulable_only=all(s.unschedulable_only for s in steps))
