"""Test support for the twin's Kubernetes API: workload builders."""

from __future__ import annotations

from typing import Any

from simulator.kube.serve import KubeTwin, SimClock

__all__ = ["KubeTwin", "SimClock", "gpu_deployment"]


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
