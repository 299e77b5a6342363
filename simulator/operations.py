"""What operators and the monitoring stack do to a healthy fleet, none of it a fault.

Scrapes miss a node for a few samples; dcgm-exporter restarts and its cumulative counters start again
from zero; people cordon nodes for their own reasons (with their own annotation or none, never gpuops');
a rolling driver upgrade cordons, drains and reboots one node at a time, which comes back with a new
driver version; nodes join the fleet mid-run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from connectors.kubernetes.annotations import CORDONED_BY
from simulator.hardware import DRIVER_VERSION
from simulator.healthy_spec import Operations
from simulator.kube.errors import KubeError
from simulator.physics import BoolArray, FleetPhysics

if TYPE_CHECKING:
    from simulator.twin import Twin

HUMAN_REASON = "ops.example.com/cordon-reason"
HUMAN_REASONS = (
    "fan replacement scheduled",
    "investigating a user report",
    "BMC firmware check",
    "held for a debugging session",
)
UPGRADE_STATE = "nvidia.com/gpu-driver-upgrade-state"  # the GPU Operator's upgrade controller label
DRIVER_LABEL = "nvidia.com/cuda.driver-version.full"
DRAIN_TIMEOUT_S = 1800.0


def driver_labels(version: str) -> dict[str, str]:
    """GPU Feature Discovery's driver labels for `version`."""
    major, minor, *rest = version.split(".")
    return {DRIVER_LABEL: version, "nvidia.com/cuda.driver-version.major": major,
            "nvidia.com/cuda.driver-version.minor": minor,
            "nvidia.com/cuda.driver-version.revision": rest[0] if rest else "0"}


def reset_after_restart(physics: FleetPhysics, rows: slice) -> None:
    """dcgm-exporter came back: counters it accumulates itself (energy, NVLink traffic) start from zero."""
    physics.energy_mj[rows] = 0
    physics.nvlink_bandwidth_kib[rows] = 0


def reset_after_reboot(physics: FleetPhysics, rows: slice) -> None:
    """The driver reloaded: volatile ECC counts, last XID, violation times and energy start from zero."""
    reset_after_restart(physics, rows)
    for row in range(rows.start, rows.stop):
        physics.reset_gpu(row)
    physics.power_violation_us[rows] = 0
    physics.thermal_violation_us[rows] = 0


@dataclass
class _Upgrade:
    node: str
    stage: str  # drain | reboot | done
    since: float
    back_at: float = math.inf
    was_cordoned: bool = False


class FleetOperations:
    """Scrape gaps, exporter restarts, human cordons, a rolling driver upgrade and nodes joining."""

    def __init__(self, spec: Operations, nodes: tuple[str, ...], start: float, step_s: float,
                 rng: np.random.Generator) -> None:
        self.spec = spec
        self.nodes = nodes
        self.step_s = step_s
        self.rng = rng
        self.gap_until = np.full(len(nodes), -math.inf)
        self.join_at: dict[str, float] = {}
        last = len(nodes) - sum(a.count for a in spec.nodes_added)
        for added in sorted(spec.nodes_added, key=lambda a: a.at):
            for name in nodes[last:last + added.count]:
                self.join_at[name] = start + added.at
            last += added.count
        self.joined = np.array([name not in self.join_at for name in nodes])
        self.human_cordons: dict[str, float] = {}
        self.upgrades: dict[str, _Upgrade] = {}
        self._queue: list[str] = []
        self._next_upgrade = math.inf
        self.restarts: list[tuple[float, str]] = []  # (time, node): what the exporter restarts were

    def scraped(self, t: float) -> BoolArray:
        """Per node: does its exporter answer this scrape."""
        return self.joined & (self.gap_until <= t)

    def attach(self, twin: Twin) -> None:
        """Label every node with its driver and queue the upgrade, if the scenario rolls one out."""
        upgrade = self.spec.driver_upgrade
        if upgrade is None:
            return
        for name in self.nodes:
            if name not in self.join_at:
                self._label(twin, name, driver_labels(DRIVER_VERSION))
        order = [self.nodes[i] for i in self.rng.permutation(len(self.nodes)).tolist()]
        self._queue = order[: upgrade.nodes or len(order)]
        self._next_upgrade = twin.start + upgrade.at

    def step(self, t: float, twin: Twin) -> None:
        """Everything operations do at `t`."""
        self._join(t, twin)
        self._scrape_gaps(t, twin)
        self._human_cordons(t, twin)
        self._driver_upgrade(t, twin)

    # ------------------------------------------------------------------ monitoring

    def _chance(self, per_day: float, n: int) -> BoolArray:
        p = 1.0 - math.exp(-per_day / 86400.0 * self.step_s)
        return self.rng.random(n) < p

    def _scrape_gaps(self, t: float, twin: Twin) -> None:
        spec, n = self.spec, len(self.nodes)
        if spec.scrape_gaps_per_node_day > 0:
            start = self._chance(spec.scrape_gaps_per_node_day, n) & (self.gap_until <= t)
            samples = self.rng.integers(spec.scrape_gap_samples[0], spec.scrape_gap_samples[1] + 1, n)
            self.gap_until = np.where(start, t + (samples - 0.5) * self.step_s, self.gap_until)
        if spec.exporter_restarts_per_node_day > 0:
            for i in np.flatnonzero(self._chance(spec.exporter_restarts_per_node_day, n) & self.joined).tolist():
                self.gap_until[i] = max(self.gap_until[i], t + 1.5 * self.step_s)  # down ~20–30 s
                g = twin.gpus_per_node
                reset_after_restart(twin.physics, slice(i * g, (i + 1) * g))
                self.restarts.append((t, self.nodes[i]))

    # ------------------------------------------------------------------ nodes

    def _join(self, t: float, twin: Twin) -> None:
        for name, at in list(self.join_at.items()):
            if at <= t:
                del self.join_at[name]
                labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
                if self.spec.driver_upgrade is not None:
                    labels |= driver_labels(DRIVER_VERSION)
                twin.kube.add_node(name, twin.gpus_per_node, labels)
                twin.set_node_ready(name, True, "KubeletReady")  # the twin starts scraping it
                self.joined[self.nodes.index(name)] = True

    @staticmethod
    def _label(twin: Twin, node: str, labels: dict[str, str], **spec: Any) -> None:
        def change(obj: dict[str, Any]) -> dict[str, Any]:
            obj["metadata"].setdefault("labels", {}).update(labels)
            obj.setdefault("spec", {}).update(spec)
            return obj

        twin.kube.update_object("nodes", "", node, change)

    def _human_cordons(self, t: float, twin: Twin) -> None:
        for name, until in list(self.human_cordons.items()):
            if until <= t:
                del self.human_cordons[name]
                self._uncordon_if_ours(twin, name, HUMAN_REASON)
        if self.spec.human_cordons_per_day <= 0 or not self._chance(self.spec.human_cordons_per_day, 1)[0]:
            return
        candidates = [n for i, n in enumerate(self.nodes)
                      if self.joined[i] and n not in self.upgrades and n not in self.human_cordons]
        if not candidates:
            return
        name = candidates[int(self.rng.integers(0, len(candidates)))]
        if twin.kube.get_node(name).get("spec", {}).get("unschedulable"):
            return
        reason = HUMAN_REASONS[int(self.rng.integers(0, len(HUMAN_REASONS)))]
        annotated = bool(self.rng.random() < 0.5)

        def cordon(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"]["unschedulable"] = True
            if annotated:
                obj["metadata"].setdefault("annotations", {})[HUMAN_REASON] = reason
            return obj

        twin.kube.update_object("nodes", "", name, cordon)
        self.human_cordons[name] = t + float(self.rng.uniform(*self.spec.human_cordon_length))

    @staticmethod
    def _uncordon_if_ours(twin: Twin, name: str, annotation: str | None = None) -> None:
        """Uncordon a node we cordoned (dropping our `annotation`), unless gpuops has since cordoned it."""
        node = twin.kube.get_node(name)
        if CORDONED_BY in (node["metadata"].get("annotations") or {}):
            return

        def uncordon(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"].pop("unschedulable", None)
            if annotation:
                (obj["metadata"].get("annotations") or {}).pop(annotation, None)
            return obj

        twin.kube.update_object("nodes", "", name, uncordon)

    # ------------------------------------------------------------------ driver upgrade

    def _driver_upgrade(self, t: float, twin: Twin) -> None:
        if self._queue and t >= self._next_upgrade:
            self._begin_upgrade(self._queue.pop(0), t, twin)
            assert self.spec.driver_upgrade is not None
            self._next_upgrade = t + self.spec.driver_upgrade.every
        for upgrade in list(self.upgrades.values()):
            if upgrade.stage == "drain":
                self._drain(upgrade, t, twin)
            elif upgrade.stage == "reboot" and t >= upgrade.back_at:
                self._come_back(upgrade, twin)

    def _begin_upgrade(self, name: str, t: float, twin: Twin) -> None:
        if name in self.join_at:
            self._queue.append(name)  # not in the fleet yet: its turn comes after it joins
            return
        was = bool(twin.kube.get_node(name).get("spec", {}).get("unschedulable"))
        self.human_cordons.pop(name, None)
        self._label(twin, name, {UPGRADE_STATE: "drain-required"}, unschedulable=True)
        self.upgrades[name] = _Upgrade(name, "drain", t, was_cordoned=was)

    def _drain(self, upgrade: _Upgrade, t: float, twin: Twin) -> None:
        """Evict the node's pods (respecting their budgets), force them after the drain timeout, then reboot."""
        pods = [p for p in twin.kube.list_pods(node=upgrade.node)
                if p.get("status", {}).get("phase") in ("Pending", "Running")]
        force = t - upgrade.since > DRAIN_TIMEOUT_S
        for pod in pods:
            md = pod["metadata"]
            if "deletionTimestamp" in md:
                continue
            try:
                if force:
                    twin.kube.delete_object("pods", md["namespace"], md["name"])
                else:
                    twin.kube.evict(md["namespace"], md["name"])
            except KubeError:
                continue  # a disruption budget says not now: try again next step
        if pods:
            return
        assert self.spec.driver_upgrade is not None
        upgrade.stage = "reboot"
        upgrade.back_at = t + float(self.rng.uniform(*self.spec.driver_upgrade.reboot))
        self._label(twin, upgrade.node, {UPGRADE_STATE: "pod-restart-required"})
        twin.set_node_ready(upgrade.node, False, "NodeStatusUnknown")
        g = twin.gpus_per_node
        i = self.nodes.index(upgrade.node)
        reset_after_reboot(twin.physics, slice(i * g, (i + 1) * g))

    def _come_back(self, upgrade: _Upgrade, twin: Twin) -> None:
        """The node boots with the new driver: Ready, relabelled, and uncordoned unless someone else holds it."""
        assert self.spec.driver_upgrade is not None
        version = self.spec.driver_upgrade.version
        upgrade.stage = "done"
        twin.set_node_ready(upgrade.node, True, "KubeletReady")

        def boot(obj: dict[str, Any]) -> dict[str, Any]:
            info = obj["status"]["nodeInfo"]
            info["bootID"] = str(int(info.get("bootID", "0")) + 1)
            return obj

        twin.kube.update_object("nodes", "", upgrade.node, boot, subresource="status")
        self._label(twin, upgrade.node, {**driver_labels(version), UPGRADE_STATE: "upgrade-done"})
        if not upgrade.was_cordoned:
            self._uncordon_if_ours(twin, upgrade.node)
        twin.set_driver_version(upgrade.node, version)
