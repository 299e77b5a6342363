"""A healthy fleet's real mess, in one place the twin calls: workload phases, environment, operations.

Built from the scenario's `healthy:` block and its notebook and batch workloads. With neither, every part
is inert and draws nothing, so the twin's telemetry is exactly what it was without this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from simulator.behaviour import WorkloadBehaviour
from simulator.environment import FleetEnvironment
from simulator.healthy_spec import BatchWorkload, Healthy, NotebookWorkload
from simulator.kube.state import KubeEvent
from simulator.lifecycle import NOTEBOOK_NAMESPACE, WorkloadLifecycle
from simulator.operations import FleetOperations
from simulator.physics import BoolArray, FleetPhysics
from simulator.scenario import Scenario, node_name

if TYPE_CHECKING:
    from simulator.twin import Twin

HEALTHY_STREAM = 0x6EA1  # its own random stream, so the twin's other draws stay as they were


class HealthyFleet:
    """Owns the environment, the operations and the workload lifecycle; the twin calls it each step."""

    def __init__(self, scenario: Scenario, physics: FleetPhysics) -> None:
        spec = scenario.healthy or Healthy()
        seeds = np.random.SeedSequence(scenario.seed, spawn_key=(HEALTHY_STREAM,)).spawn(4)
        rng_env, rng_ops, rng_life, rng_work = (np.random.default_rng(s) for s in seeds)
        workloads = scenario.workloads or []
        notebooks = [w for w in workloads if isinstance(w, NotebookWorkload)]
        batches = [w for w in workloads if isinstance(w, BatchWorkload)]
        nodes = tuple(node_name(i) for i in range(scenario.fleet.nodes))
        self.environment = FleetEnvironment(spec.environment, physics, rng_env)
        self.operations = FleetOperations(spec.operations, nodes, scenario.start, scenario.step, rng_ops)
        self.lifecycle = WorkloadLifecycle(spec.training, rng_life, notebooks, batches)
        wanted = scenario.healthy is not None or bool(notebooks or batches)
        self.behaviour = WorkloadBehaviour(spec, rng_work, scenario.step) if wanted else None

    @property
    def joining(self) -> frozenset[str]:
        """Nodes that join later: absent from the cluster and the scrape until then."""
        return frozenset(self.operations.join_at)

    def attach(self, twin: Twin) -> None:
        """Hook into a freshly built twin: workload phases, first pods, node labels, events."""
        twin.book.behaviour = self.behaviour
        self.lifecycle.attach(twin)
        self.operations.attach(twin)
        twin.kube.subscribe(lambda event: self._on_event(event, twin))

    def _on_event(self, event: KubeEvent, twin: Twin) -> None:
        self.lifecycle.on_event(event, twin.t)
        if (self.behaviour is not None and event.kind == "pod_stopped" and event.namespace == NOTEBOOK_NAMESPACE
                and event.node is not None and event.node in twin.nodes):
            base = twin.nodes.index(event.node) * twin.gpus_per_node
            self.behaviour.notebook_stopped([base + int(g) for g in event.detail.get("gpus", [])])

    def step(self, t: float, twin: Twin) -> None:
        """This step's environment, operations and workload comings and goings."""
        self.environment.step(t, twin.step_s)
        self.operations.step(t, twin)
        self.lifecycle.step(t, twin)

    def scraped(self, t: float) -> BoolArray:
        """Per node: whether its exporter answers now (scrape gaps, restarts, not yet joined)."""
        return self.operations.scraped(t)
