"""Test support for the twin's Kubernetes API: bounded polling and workload builders."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from simulator.kube.serve import KubeTwin, SimClock

__all__ = ["KubeTwin", "SimClock", "gpu_deployment", "wait_for"]


def wait_for(condition: Callable[[], Any], timeout: float, message: str) -> Any:
    """Poll `condition` until it returns something truthy; fail with `message` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (after {timeout}s)")
        time.sleep(0.02)


def gpu_deployment(
    name: str, replicas: int, gpus: int, namespace: str = "ml", **notes: str
) -> dict[str, Any]:
    """A training-style Deployment whose pods each ask for `gpus` GPUs."""
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name, "sim.gpuops.io/workload": name},
                    "annotations": dict(notes),
                },
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "trainer:1",
                            "resources": {"limits": {"nvidia.com/gpu": gpus}},
                        }
                    ]
                },
            },
        },
    }
