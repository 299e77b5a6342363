"""Benchmark of the twin's Kubernetes side and the cluster connector.

Measures, with medians over repeated runs:
- `tick()` cost of an idle and of a churning fleet at growing sizes, as a ratio to the smallest fleet;
- listing one node's pods through the official client over HTTP, as a ratio to the in-process call
  (the price of the real protocol);
- draining a node through the connector (cordon, evict every pod, wait until gone) in real and in
  simulated seconds, at the ticker's speed.

Run: `python -m bench.kube` (writes bench/results/kube.json).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from connectors.kubernetes.adapter import KubernetesCluster
from simulator.kube.serve import KubeTwin, SimClock
from simulator.kube.state import KubeState

FLEETS = (16, 64, 256)
GPUS_PER_NODE = 8


def _deployment(name: str, replicas: int, gpus: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
            },
        },
    }


def _fleet(state: KubeState, nodes: int) -> None:
    for i in range(nodes):
        state.add_node(f"gpu-node-{i + 1:03d}", GPUS_PER_NODE)
    state.add_daemonset(
        {
            "metadata": {"name": "dcgm", "namespace": "gpu-operator"},
            "spec": {"template": {"metadata": {"labels": {"app": "dcgm"}}}},
        }
    )
    for j in range(nodes // 2):  # half the GPUs busy: 4-GPU pods, 2 per job
        state.add_deployment(_deployment(f"job-{j}", 2, 4))


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def bench_tick(nodes: int, repeats: int = 50) -> dict[str, float]:
    clock = SimClock()
    state = KubeState(clock)
    _fleet(state, nodes)
    idle, churn = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state.tick(clock.advance(1.0))
        idle.append(time.perf_counter() - t0)
    for k in range(repeats):
        pods = state.list_pods(namespace="ml")
        victim = pods[k % len(pods)]["metadata"]["name"]
        state.delete_object("pods", "ml", victim, grace_seconds=0)
        t0 = time.perf_counter()
        state.tick(clock.advance(10.0))  # reschedule and start the replacement
        churn.append(time.perf_counter() - t0)
    return {"idle_tick_ms": _median_ms(idle), "churn_tick_ms": _median_ms(churn)}


def bench_list_pods(repeats: int = 200) -> dict[str, float]:
    with KubeTwin(speed=1) as twin:
        _fleet(twin.state, 64)
        cluster = KubernetesCluster.connect(api_url=twin.url)
        try:
            direct, http = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                twin.state.list_pods(node="gpu-node-001")
                direct.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                cluster.list_pods("gpu-node-001")
                http.append(time.perf_counter() - t0)
        finally:
            cluster.close()
    return {
        "direct_ms": _median_ms(direct),
        "client_http_ms": _median_ms(http),
        "http_over_direct": statistics.median(http) / statistics.median(direct),
    }


def bench_drain(repeats: int = 5, speed: float = 100.0) -> dict[str, float]:
    real, simulated = [], []
    for _ in range(repeats):
        with KubeTwin(speed=speed) as twin:
            _fleet(twin.state, 8)
            cluster = KubernetesCluster.connect(api_url=twin.url)
            try:
                node = "gpu-node-001"
                t0, s0 = time.perf_counter(), twin.clock()
                cluster.cordon(node, reason="bench")
                movable = [p for p in cluster.list_pods(node) if not p.is_daemonset]
                for pod in movable:
                    cluster.evict_pod(pod.namespace, pod.name, deadline_s=30, retry_interval_s=0.05)
                while any(not p.is_daemonset for p in cluster.list_pods(node)):
                    time.sleep(0.005)
                real.append(time.perf_counter() - t0)
                simulated.append(twin.clock() - s0)
            finally:
                cluster.close()
    return {
        "drain_real_s": statistics.median(real),
        "drain_simulated_s": statistics.median(simulated),
        "speed": speed,
    }


def run(results_dir: Path) -> dict[str, Any]:
    """Run every measurement and write `results_dir / "kube.json"`."""
    ticks = {str(n): bench_tick(n) for n in FLEETS}
    base = ticks[str(FLEETS[0])]
    for n in FLEETS:
        entry = ticks[str(n)]
        entry["idle_ratio_to_smallest"] = entry["idle_tick_ms"] / base["idle_tick_ms"]
        entry["churn_ratio_to_smallest"] = entry["churn_tick_ms"] / base["churn_tick_ms"]
    results: dict[str, Any] = {
        "tick_by_fleet_nodes": ticks,
        "list_pods_on_node": bench_list_pods(),
        "drain_one_node": bench_drain(),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "kube.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


if __name__ == "__main__":
    out = run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results")
    print(json.dumps(out, indent=2, sort_keys=True))
