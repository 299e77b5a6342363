"""The fleet twin: Kubernetes state, workloads, physics and faults advanced together in simulated time.

`Twin(scenario)` builds everything from a scenario; `step()` advances one scenario step,
`advance_to(t)` as many as fit; `metrics_text()` is the exporter's /metrics body; `truth()` the
ground truth of every fault. Deterministic for a given scenario (seed included).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from simulator.exposition import XID_WINDOW_MS, gpu_label_prefix, pod_labels, render_dcgm, render_kube_state
from simulator.fabric import Fabric
from simulator.faults import ActiveFault, build_faults
from simulator.hardware import DRIVER_VERSION, SPECS
from simulator.healthy import HealthyFleet
from simulator.kube.objects import replica_pod_suffix
from simulator.kube.state import WORKLOAD_LABEL, KubeEvent, KubeState
from simulator.physics import FleetPhysics, Modifiers
from simulator.replay import build_replay
from simulator.scenario import InferenceWorkload, Scenario, TrainingWorkload, node_index, node_name
from simulator.serving import InferenceServing
from simulator.workloads import (
    TRAINING_NAMESPACE,
    TRAINING_RESTART_DELAY_S,
    WorkloadBook,
    default_workloads,
    inference_deployment,
    inference_pod,
    training_placement,
    training_pod,
    workload_pdb,
)

# XIDs the NVIDIA device plugin treats as application errors; any other marks the GPU unhealthy.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
# PCI bus ids of the eight SXM slots of a DGX H100 baseboard.
HGX_BUS_IDS = ("1B", "43", "52", "61", "9D", "C3", "D1", "DF")


class Twin:
    """A simulated GPU fleet with its Kubernetes state, advanced step by step in simulated time."""

    def __init__(self, scenario: Scenario, *, external_node_agent: bool = False) -> None:
        """`external_node_agent`: leave GPUReset, NodeReboot and NodeValidation requests to `gpuops node-agent`
        (its programs reach the hosts through `/sim/nodes/...`) instead of carrying them out."""
        self.scenario = scenario
        self.start = scenario.start
        self.t = scenario.start
        self.step_s = scenario.step
        self.end = scenario.start + scenario.duration
        fleet = scenario.fleet
        self.n_nodes, self.gpus_per_node = fleet.nodes, fleet.gpus_per_node
        self.n = fleet.n_gpus
        self.nodes = tuple(node_name(i) for i in range(self.n_nodes))
        seeds = np.random.SeedSequence(scenario.seed).spawn(4)
        rng_ids, rng_physics, rng_faults, rng_work = (np.random.default_rng(s) for s in seeds)
        self._lock = threading.RLock()
        self.spec = SPECS[fleet.gpu_model]
        self.physics = FleetPhysics(self.n_nodes, self.gpus_per_node, self.spec, rng_physics)
        self.uuids = tuple(self._uuid(rng_ids) for _ in range(self.n))
        self.present = np.ones(self.n, dtype=bool)
        self._unschedulable: set[int] = set()
        self.node_up = np.ones(self.n_nodes, dtype=bool)
        self.fabric = Fabric(self.n_nodes, self.gpus_per_node)  # one HCA per GPU
        self._xids: deque[tuple[float, int, int]] = deque()
        self.kube_seconds = 0.0  # wall time spent in the Kubernetes state's tick (for benchmarks)
        self.kube = KubeState(clock=lambda: self.t, external_node_agent=external_node_agent)
        self.kube.gpu_uuids = {(self.nodes[row // self.gpus_per_node], row % self.gpus_per_node): uuid
                               for row, uuid in enumerate(self.uuids)}
        self.healthy = HealthyFleet(scenario, self.physics)
        for name in self.nodes:
            if name in self.healthy.joining:
                continue  # joins the fleet later (simulator/operations.py)
            self.kube.add_node(name, self.gpus_per_node, {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
        specs = (
            scenario.workloads if scenario.workloads is not None else default_workloads(scenario, rng_work)
        )
        self.book = WorkloadBook({w.name: w for w in specs}, rng_work)
        self._restarts: list[tuple[float, TrainingWorkload, int]] = []
        self._generation: dict[tuple[str, int], int] = {}
        self._install_workloads(rng_work)
        self.book.replay = build_replay(scenario, self.kube, self.nodes, self.gpu_usable) if scenario.replay else None
        self.serving = (InferenceServing(scenario.serving, self.kube, self.start, self.end, scenario.seed)
                        if scenario.serving else None)
        self._prefix = [
            gpu_label_prefix(
                row % self.gpus_per_node,
                self.uuids[row],
                self._bus_id(row % self.gpus_per_node),
                self.spec.model_name,
                self.nodes[row // self.gpus_per_node],
                DRIVER_VERSION,
            )
            for row in range(self.n)
        ]
        self._labels: list[str] = list(self._prefix)
        self._pods_by_row: list[list[str]] = [[] for _ in range(self.n)]
        self._workload_by_row: list[str | None] = [None] * self.n
        self._dirty = True
        self._nodes_dirty = True  # node readiness is re-read after any Kubernetes event
        self.faults: list[ActiveFault] = build_faults(scenario, self.start, rng_faults)
        self.kube.subscribe(self._on_event)
        self.healthy.attach(self)
        self._refresh_assignments()

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _uuid(rng: np.random.Generator) -> str:
        h = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16).tolist())
        return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    @staticmethod
    def _bus_id(gpu: int) -> str:
        bus = HGX_BUS_IDS[gpu] if gpu < len(HGX_BUS_IDS) else f"{0xE0 + gpu:02X}"
        return f"00000000:{bus}:00.0"

    def _install_workloads(self, rng: np.random.Generator) -> None:
        """Training pods on consecutive nodes, inference replicas packed on the nodes after them.

        Replicas are created bound (as the Deployment controller and scheduler would leave them), so
        a large fleet starts without scheduling thousands of pods one by one.
        """
        jobs = [w for w in self.book.specs.values() if isinstance(w, TrainingWorkload)]
        placement = training_placement(jobs)
        for job in jobs:
            for i, node in enumerate(placement[job.name]):
                self.kube.add_pod(training_pod(job, i, self.gpus_per_node, node))
        used = sum(job.nodes for job in jobs)
        free = {node: list(range(self.gpus_per_node)) for node in self.nodes[used:] if node not in self.healthy.joining}
        deployments = []
        for spec in self.book.specs.values():
            if not isinstance(spec, InferenceWorkload):
                continue  # notebooks and batch runs start from simulator/lifecycle.py
            deployment = inference_deployment(spec, self._hex_uid(rng))
            deployments.append(deployment)
            for _ in range(spec.replicas):
                host = next((n for n, gpus in free.items() if len(gpus) >= spec.gpus_per_replica), None)
                if host is None:
                    break  # the Deployment controller creates the rest as pending pods
                gpus, free[host] = free[host][: spec.gpus_per_replica], free[host][spec.gpus_per_replica :]
                if not free[host]:
                    del free[host]
                suffix = replica_pod_suffix(str(deployment["metadata"]["uid"]), rng.integers(0, 256, 5).tolist())
                self.kube.add_pod(inference_pod(spec, deployment, suffix, host, gpus, self._hex_uid(rng)))
        for deployment in deployments:
            self.kube.add_deployment(deployment)
        for spec in self.book.specs.values():
            if isinstance(spec, TrainingWorkload | InferenceWorkload) and spec.max_unavailable is not None:
                self.kube.add_pdb(workload_pdb(spec))

    @staticmethod
    def _hex_uid(rng: np.random.Generator) -> str:
        h = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16).tolist())
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    def row(self, node: str, gpu: int) -> int:
        """The array row of (node, gpu)."""
        return node_index(node) * self.gpus_per_node + gpu

    # ------------------------------------------------------------------ time

    def step(self) -> None:
        """Advance one scenario step."""
        with self._lock:
            self.t += self.step_s
            self._start_restarts()
            self.healthy.step(self.t, self)
            if self.book.replay is not None:
                self.book.replay.sync(self.t)
            began = time.perf_counter()
            self.kube.tick(self.t)
            self.kube_seconds += time.perf_counter() - began
            if self.serving is not None:
                self.serving.advance(self.t)
            if self._dirty:
                self._refresh_assignments()
            demand = self.book.demand(self.t, self.n)
            mods = Modifiers(self.n)
            for fault in self.faults:
                fault.step(self.t, self.step_s, mods, self)
            if self._dirty:
                self._refresh_assignments()
                demand = self.book.demand(self.t, self.n)
            demand.load[~self.present] = 0.0
            self.physics.step(self.t, self.step_s, demand, mods)
            self.fabric.step(self.step_s, demand.load.reshape(self.n_nodes, self.gpus_per_node))
            for row, code in mods.xids:
                self._xids.append((self.t, row, code))
                if code not in APPLICATION_XIDS:
                    self._set_schedulable(row, False)
            while self._xids and self._xids[0][0] <= self.t - XID_WINDOW_MS / 1000.0:
                self._xids.popleft()
            if self._nodes_dirty:
                self._nodes_dirty = False
                for i, name in enumerate(self.nodes):
                    self.node_up[i] = name not in self.healthy.joining and self.kube.node_ready(name)

    def advance_to(self, t: float) -> int:
        """Step until the next step would pass `t` (or the scenario ends); returns the steps taken."""
        steps = 0
        while self.t + self.step_s <= min(t, self.end) + 1e-9:
            self.step()
            steps += 1
        return steps

    @property
    def finished(self) -> bool:
        return self.t + self.step_s > self.end + 1e-9

    # ------------------------------------------------------------------ what the exporter shows

    def visible_rows(self) -> list[int]:
        """Rows whose exporter answers: the GPU is on the bus and its node is up."""
        mask = self.present & np.repeat(self.node_up & self.healthy.scraped(self.t), self.gpus_per_node)
        return np.flatnonzero(mask).tolist()

    def xid_counts(self) -> dict[int, dict[int, int]]:
        counts: dict[int, dict[int, int]] = {}
        for _, row, code in self._xids:
            per = counts.setdefault(row, {})
            per[code] = per.get(code, 0) + 1
        return counts

    def _suffix(self, timestamps: bool | str) -> str:
        if timestamps == "openmetrics":
            return f" {self.t:.3f}"
        return f" {round(self.t * 1000)}" if timestamps else ""

    def dcgm_text(self, timestamps: bool | str = False) -> str:
        """dcgm-exporter's /metrics body for every visible GPU.

        `timestamps`: False like the exporter, True for millisecond sample timestamps (simulated
        time), "openmetrics" for OpenMetrics second timestamps.
        """
        with self._lock:
            rows = self.visible_rows()
            return render_dcgm(
                self.physics,
                rows,
                [self._labels[r] for r in rows],
                self.xid_counts(),
                self._suffix(timestamps),
            )

    def kube_state_text(self, timestamps: bool | str = False) -> str:
        """kube-state-metrics series for the twin's nodes, pods and deployments."""
        with self._lock:
            return render_kube_state(
                self.kube.list_nodes(),
                self.kube.list_pods(),
                self.kube.list_deployments(),
                self._suffix(timestamps),
            )

    def metrics_text(self, timestamps: bool | str = False) -> str:
        """The whole /metrics body: dcgm-exporter, kube-state-metrics, then the inference servers' vLLM series."""
        with self._lock:
            return self.dcgm_text(timestamps) + self.kube_state_text(timestamps) + self.serving_text(timestamps)

    def serving_text(self, timestamps: bool | str = False) -> str:
        """The vLLM series of the scenario's inference Deployments (empty without a `serving` section)."""
        with self._lock:
            return self.serving.metrics_text(self._suffix(timestamps)) if self.serving is not None else ""

    # ------------------------------------------------------------------ ground truth

    def write_sysfs(self, root: str | Path, node: str) -> Path:
        """Write `node`'s /sys/class/infiniband tree under `root`, for a node exporter's `--path.sysfs`."""
        with self._lock:
            return self.fabric.write_sysfs(root, self.nodes.index(node))

    def truth(self) -> dict[str, Any]:
        with self._lock:
            return {
                "scenario": self.scenario.name,
                "seed": self.scenario.seed,
                "start": self.start,
                "step": self.step_s,
                "faults": [f.truth(f.spec.node).to_json(self.start) for f in self.faults],
            }

    def write_truth(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.truth(), indent=2) + "\n", encoding="utf-8")

    def faulty_gpus(self, node: str) -> list[int]:
        """The node's GPUs a technician would swap: with an active hardware fault, or not usable."""
        return [g for g in range(self.gpus_per_node)
                if self._hardware_fault_on(self.row(node, g)) or not self.gpu_usable(node, g)]

    def replace_gpu(self, node: str, gpu: int) -> None:
        """A technician swaps the board: hardware faults on it clear, counters restart, it is back (the host was
        powered off for the swap, so a fence on the GPU is gone with the driver's state)."""
        with self._lock:
            row = self.row(node, gpu)
            self.kube.unfence_gpu(node, gpu)
            for fault in self.faults:
                if fault.row == row and fault.active and fault.onset <= self.t:
                    fault.clear(self.t, self)
            self.physics.replace_gpu(row)
            self.set_present(row, True)

    # ------------------------------------------------------------------ FaultHost

    def fail_pods_on(self, row: int, reason: str) -> list[str]:
        node = self.nodes[row // self.gpus_per_node]
        gpu = row % self.gpus_per_node
        holder = self.kube.gpu_assignments().get((node, gpu))
        if holder is None:
            return []
        pod, namespace, _ = holder
        self.kube.fail_pod(namespace, pod, reason)
        return [pod]

    def set_present(self, row: int, present: bool) -> None:
        self.present[row] = present
        self._set_schedulable(row, present)

    def _set_schedulable(self, row: int, healthy: bool) -> None:
        """The device plugin's health of a GPU: unhealthy GPUs get no new pods."""
        if (row not in self._unschedulable) == healthy:
            return
        if healthy:
            self._unschedulable.discard(row)
        else:
            self._unschedulable.add(row)
        self.kube.set_gpu_healthy(self.nodes[row // self.gpus_per_node], row % self.gpus_per_node, healthy)

    def gpu_usable(self, node: str, gpu: int) -> bool:
        """Whether the device plugin would give this GPU to a new pod: on the bus and healthy."""
        row = self.row(node, gpu)
        return bool(self.present[row]) and row not in self._unschedulable

    def _hardware_fault_on(self, row: int) -> bool:
        return any(f.row == row and f.hardware and f.active and f.onset <= self.t for f in self.faults)

    def _gpu_disabled(self, row: int) -> bool:
        """Whether a fault keeps the GPU unhealthy through a reset or a reboot."""
        return any(f.row == row and f.disables_gpu(self.t) for f in self.faults)

    def set_node_ready(self, node: str, ready: bool, reason: str) -> None:
        self.kube.set_node_ready(node, ready, reason)
        self._nodes_dirty = True

    def workload_of(self, row: int) -> str | None:
        return self._workload_by_row[row]

    def workload_rows(self, row: int) -> list[int]:
        name = self._workload_by_row[row]
        return list(self.book.rows.get(name, [row])) if name else [row]

    def lockstep_rows(self, row: int) -> list[int]:
        """The rows whose work waits on this one's: a training job's GPUs run in lock step, but a Deployment's
        replicas serve apart, as do a notebook workload's users and a batch job's workers, so for those only the
        GPUs of the row's own pod."""
        name = self._workload_by_row[row]
        spec = self.book.specs.get(name) if name else None
        if spec is None or spec.type == "training":
            return self.workload_rows(row)
        pods = set(self._pods_by_row[row])
        return [r for r in self.book.rows.get(str(name), [row]) if pods & set(self._pods_by_row[r])] or [row]

    def pods_on(self, row: int) -> list[str]:
        return list(self._pods_by_row[row])

    def set_overload(self, workload: str, factor: float) -> None:
        if factor != 1.0 and self.book.overload.get(workload, 1.0) == 1.0:  # a new surge: its own peak
            self.book.demand_peak.pop(workload, None)
        self.book.overload[workload] = factor

    def demand_peak(self, workload: str) -> float:
        return self.book.demand_peak.get(workload, 0.0)

    # ------------------------------------------------------------------ Kubernetes events

    def _refresh_assignments(self) -> None:
        self._dirty = False
        workload_of_pod: dict[tuple[str, str], str] = {}
        for obj in self.kube.list_pods():
            label = (obj["metadata"].get("labels") or {}).get(WORKLOAD_LABEL)
            if label:
                workload_of_pod[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = label
        labels = list(self._prefix)
        pods_by_row: list[list[str]] = [[] for _ in range(self.n)]
        workload_by_row: list[str | None] = [None] * self.n
        rows: dict[str, list[int]] = {}
        running: dict[str, set[str]] = {}
        for (node, gpu), (pod, namespace, container) in self.kube.gpu_assignments().items():
            if gpu >= self.gpus_per_node or node not in self.nodes:
                continue
            row = self.row(node, gpu)
            labels[row] = self._prefix[row] + pod_labels(pod, namespace, container)
            pods_by_row[row].append(pod)
            name = workload_of_pod.get((namespace, pod))
            if name:
                workload_by_row[row] = name
                rows.setdefault(name, []).append(row)
                running.setdefault(name, set()).add(pod)
        self._labels, self._pods_by_row, self._workload_by_row = labels, pods_by_row, workload_by_row
        self.book.rows = {k: sorted(v) for k, v in rows.items()}
        self.book.running_pods = {k: len(v) for k, v in running.items()}

    def _on_event(self, event: KubeEvent) -> None:
        with self._lock:
            self._dirty = True
            self._nodes_dirty = True
            if event.kind == "pod_stopped" and event.pod:
                for fault in self.faults:
                    fault.on_pod_stopped(self.t, event.pod, self)
                self._note_training_stop(event)
            elif event.kind == "gpu_reset" and event.node is not None and event.gpu is not None:
                row = self.row(event.node, event.gpu)
                if self.present[row]:
                    self.physics.reset_gpu(row)
                for fault in self.faults:
                    if fault.row == row:
                        fault.on_reset(self.t, self)
                if self.present[row] and not self._gpu_disabled(row):
                    self._set_schedulable(row, True)
            elif event.kind == "node_rebooted" and event.node is not None:
                base = node_index(event.node) * self.gpus_per_node
                for row in range(base, base + self.gpus_per_node):
                    self.physics.reset_gpu(row)
                for fault in self.faults:
                    if fault.spec.node == event.node:
                        fault.on_reboot(self.t, self)
                for row in range(base, base + self.gpus_per_node):
                    if self.present[row] and not self._gpu_disabled(row):
                        self._set_schedulable(row, True)
                self.node_up[node_index(event.node)] = True

    def _note_training_stop(self, event: KubeEvent) -> None:
        name = event.detail.get("workload")
        spec = self.book.specs.get(name) if isinstance(name, str) else None
        if (
            not isinstance(spec, TrainingWorkload)
            or event.namespace != TRAINING_NAMESPACE
            or event.pod is None
        ):
            return
        index = int(event.pod.split("-worker-")[1].split("-")[0])
        self._restarts.append((self.t + TRAINING_RESTART_DELAY_S, spec, index))

    def forget_restarts(self, workload: str) -> None:
        """A training job that ended: its workers stopped for good, none is restarted."""
        self._restarts = [r for r in self._restarts if r[1].name != workload]

    def set_driver_version(self, node: str, version: str) -> None:
        """The node came back with another driver: its GPUs' DCGM_FI_DRIVER_VERSION label changes."""
        with self._lock:
            base = node_index(node) * self.gpus_per_node
            for row in range(base, base + self.gpus_per_node):
                gpu = row % self.gpus_per_node
                self._prefix[row] = gpu_label_prefix(
                    gpu, self.uuids[row], self._bus_id(gpu), self.spec.model_name, node, version
                )
            self._dirty = True

    def _start_restarts(self) -> None:
        due = [r for r in self._restarts if r[0] <= self.t]
        self._restarts = [r for r in self._restarts if r[0] > self.t]
        for _, job, index in due:
            generation = self._generation.get((job.name, index), 0) + 1
            self._generation[(job.name, index)] = generation
            self.kube.add_pod(training_pod(job, index, self.gpus_per_node, None, generation))
