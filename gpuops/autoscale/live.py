"""The scaler on live demand: each cycle folds one reading per Deployment into the planner and returns the
desired replicas by (namespace, deployment), for the service to publish as `gpuops_desired_replicas` (an HPA
or KEDA that owns the Deployment follows it; gpuops never scales it itself then)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gpuops.autoscale.observation import CycleObservation
from gpuops.autoscale.planner import DemandPlanner, PlannerSettings

DeploymentKey = tuple[str, str]  # (namespace, deployment)


@dataclass(frozen=True)
class DemandReading:
    """One Deployment at one cycle: requests that arrived since the last cycle, requests running or waiting
    now (vLLM's `vllm:num_requests_running` + `vllm:num_requests_waiting`), and its replicas now."""

    arrivals: int
    in_flight: int
    replicas: int


class LiveScaler:
    """A `DemandPlanner` over a fixed list of Deployments, keyed by (namespace, deployment)."""

    def __init__(self, deployments: Sequence[DeploymentKey], settings: PlannerSettings | None = None) -> None:
        if len(set(deployments)) != len(deployments):
            raise ValueError("each (namespace, deployment) may be listed once")
        self.deployments = tuple(deployments)
        self._index = {key: i for i, key in enumerate(self.deployments)}
        self.planner = DemandPlanner(len(self.deployments), settings)

    def cycle(self, now: float, readings: Mapping[DeploymentKey, DemandReading],
              cold_starts: Iterable[tuple[DeploymentKey, float]] = ()) -> dict[DeploymentKey, int]:
        """Plan from this cycle's readings; a Deployment without a reading counts as idle with no replicas.
        Readings and cold starts of Deployments not in the list are left out."""
        n = len(self.deployments)
        arrivals, in_flight, replicas = (np.zeros(n, dtype=np.int64) for _ in range(3))
        for key, reading in readings.items():
            i = self._index.get(key)
            if i is not None:
                arrivals[i], in_flight[i], replicas[i] = reading.arrivals, reading.in_flight, reading.replicas
        seen = tuple((self._index[key], seconds) for key, seconds in cold_starts if key in self._index)
        desired = self.planner.decide(CycleObservation(now, arrivals, in_flight, replicas, seen))
        return {key: int(desired[i]) for i, key in enumerate(self.deployments)}
