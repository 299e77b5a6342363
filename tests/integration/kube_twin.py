"""Test support: the twin's Kubernetes API served by uvicorn on a free 127.0.0.1 port, with simulated time.

A ticker thread advances a simulated clock at `speed` x real time and calls `state.tick()`, so
grace periods, pod starts, resets and reboots happen in bounded real time; tests poll with a
deadline instead of sleeping.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from simulator.kube.api import build_app
from simulator.kube.state import KubeState


class SimClock:
    """Simulated unix seconds, advanced by the ticker."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self._t = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._t += seconds
            return self._t


class KubeTwin:
    """A KubeState behind a real HTTP server, with a ticker running simulated time."""

    def __init__(self, speed: float = 100.0, **state_options: Any) -> None:
        self.clock = SimClock()
        self.state = KubeState(self.clock, **state_options)
        self.speed = speed
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(build_app(self.state), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True),
            threading.Thread(target=self._tick, daemon=True),
        ]
        self.tick_errors: list[BaseException] = []

    def _tick(self) -> None:
        step = 0.01
        while not self._stop.wait(step):
            try:
                self.state.tick(self.clock.advance(step * self.speed))
            except BaseException as exc:  # surfaced by stop(), never swallowed
                self.tick_errors.append(exc)
                return

    def start(self) -> KubeTwin:
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self._server.started, 10, "the twin's API server did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        self._sock.close()
        if self.tick_errors:
            raise self.tick_errors[0]


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
