"""Test support for the runbooks: the twin's Kubernetes API served by uvicorn on a free loopback port,
with simulated time that moves only when a runbook sleeps (RunbookContext.sleep), so every wait in a
runbook is bounded and deterministic; and the real connector adapter pointed at it."""

from __future__ import annotations

import copy
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from connectors.kubernetes.adapter import KubernetesCluster
from runbooks import RunbookContext, RunbookSettings, StepResult
from simulator.kube.api import build_app
from simulator.kube.resources import BY_PLURAL
from simulator.kube.state import GPU_ANNOTATION, WORKLOAD_LABEL, KubeState
from tests.waiting import wait_for

START = 1_767_225_600.0


class ManualClock:
    """Simulated unix seconds; only `advance` moves them."""

    def __init__(self, start: float = START) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


class Twin:
    """A KubeState behind a real HTTP server. `sleep(s)` advances simulated time in steps of at most
    one second, ticking the state each step, as a runbook's waits would see a live cluster move."""

    def __init__(self, **state_options: Any) -> None:
        self.clock = ManualClock()
        options = {"pod_start_seconds": 5, "gpu_reset_seconds": 30, "node_reboot_seconds": 120}
        self.state = KubeState(self.clock, **(options | state_options))
        self.slept = 0.0
        # IPPROTO_TCP lets asyncio switch off Nagle on the accepted connections (about 40 ms a request otherwise).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(build_app(self.state), log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> Twin:
        self._thread.start()

        def started() -> bool:
            assert self._thread.is_alive(), "the twin's API server thread died"
            return self._server.started

        wait_for(started, timeout=10, interval=0.01, message="the twin's API server did not start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        end = self.clock.t + seconds
        while self.clock.t < end:
            self.clock.t = min(end, self.clock.t + 1.0)
            self.state.tick(self.clock.t)

    def snapshot(self) -> dict[str, Any]:
        """Every object the twin holds, for comparing before and after."""
        return {plural: copy.deepcopy(self.state.list_objects(plural)[0]) for plural in BY_PLURAL} | {
            "resourceVersion": self.state.resource_version()
        }

    def pods(self, node: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.state.list_pods(node=node, namespace=namespace)

    def pod_names(self, node: str | None = None, namespace: str | None = None) -> set[str]:
        return {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in self.pods(node, namespace)}


def connect(twin: Twin) -> KubernetesCluster:
    return KubernetesCluster.connect(api_url=twin.url, request_timeout=5)


@contextmanager
def connected(twin: Twin) -> Iterator[KubernetesCluster]:
    """The real connector adapter on the twin's API, closed when the block ends."""
    cluster = connect(twin)
    try:
        yield cluster
    finally:
        cluster.close()


@contextmanager
def running(twin: Twin) -> Iterator[Twin]:
    """A started twin for the block, its API stopped when the block ends."""
    try:
        yield twin
    finally:
        twin.stop()


FAST = RunbookSettings(
    drain_timeout_s=120,
    evict_retry_interval_s=5,
    checkpoint_deadline_s=60,
    poll_interval_s=5,
    gpu_reset_timeout_s=120,
    node_reboot_timeout_s=600,
)


def context(
    twin: Twin,
    cluster: KubernetesCluster,
    settings: RunbookSettings = FAST,
    steps: list[tuple[str, StepResult]] | None = None,
    incident_id: int | None = 7,
) -> RunbookContext:
    record: Callable[[str, StepResult], None] = (
        (lambda name, result: steps.append((name, result))) if steps is not None else (lambda name, result: None)
    )
    return RunbookContext(
        cluster=cluster,
        settings=settings,
        clock=twin.clock,
        sleep=twin.sleep,
        incident_id=incident_id,
        actor="test",
        on_step=record,
    )


def deployment(name: str, replicas: int, gpus: int, namespace: str = "ml", **notes: str) -> dict[str, Any]:
    """A Deployment whose pods each ask for `gpus` GPUs; `notes` become pod-template annotations."""
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, WORKLOAD_LABEL: name}, "annotations": dict(notes)},
                "spec": {"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            },
        },
    }


def pdb(name: str, namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**spec, "selector": {"matchLabels": {"app": name}}},
    }


def bare_pod(
    name: str, node: str, namespace: str = "tools", gpus: list[int] | None = None, **spec: Any
) -> dict[str, Any]:
    """A pod no controller manages, bound to `node` (on GPUs `gpus` when given)."""
    notes = {GPU_ANNOTATION: ",".join(map(str, gpus))} if gpus else {}
    limits = {"limits": {"nvidia.com/gpu": len(gpus)}} if gpus else {}
    return {
        "metadata": {"name": name, "namespace": namespace, "annotations": notes},
        "spec": {"nodeName": node, "containers": [{"name": "main", "resources": limits}], **spec},
    }


def daemonset(name: str, namespace: str = "gpu-operator") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {}},
        },
    }
