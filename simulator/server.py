"""The twin on the network: one ASGI app serving `/metrics` and the Kubernetes API, and a clock
that advances the twin at `speed` times real time."""

from __future__ import annotations

import importlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from simulator.kube.state import KubeState
from simulator.twin import Twin

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def kubernetes_api(state: KubeState) -> ASGIApp | None:
    """The Kubernetes API app over `state` (`simulator.kube.api.build_app`), or None while that
    module is not there; the twin then serves /metrics alone."""
    try:
        module = importlib.import_module("simulator.kube.api")
    except ImportError:
        return None
    build: Callable[[KubeState], Any] = module.build_app
    return cast(ASGIApp, build(state))


def build_app(twin: Twin, *, with_kubernetes: bool = True) -> Starlette:
    """/metrics (dcgm-exporter + kube-state-metrics), /healthz, and the Kubernetes API under it all.

    `/metrics?timestamps=true` adds sample timestamps in simulated time (for backfills and tests).
    """

    async def metrics(request: Request) -> Response:
        stamped = request.query_params.get("timestamps", "").lower() in ("1", "true", "yes")
        return PlainTextResponse(twin.metrics_text(timestamps=stamped), media_type=PROMETHEUS_TEXT)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse(f"ok {twin.t:.0f}\n")

    routes: list[Route | Mount] = [Route("/metrics", metrics), Route("/healthz", healthz)]
    kube_app = kubernetes_api(twin.kube) if with_kubernetes else None
    if kube_app is not None:
        routes.append(Mount("", app=kube_app))
    return Starlette(routes=routes)


@dataclass
class ServedTwin:
    """A twin's /metrics and Kubernetes API served on a loopback port in a background thread."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def serve_twin(twin: Twin, *, port: int = 0, name: str = "twin-api") -> ServedTwin:
    """Serve `twin` on 127.0.0.1:`port` (0 = any free port) once the server is listening. No clock thread: the
    caller steps the twin, or starts a TwinClock."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(build_app(twin), log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            sock.close()
            raise RuntimeError("the twin's API server did not start")
        time.sleep(0.02)
    return ServedTwin(url, server, thread, sock)


class TwinClock:
    """Advances a twin in a background thread so that simulated time runs at `speed` × real time; with
    `sysfs_root`, each node's /sys/class/infiniband tree is rewritten under `sysfs_root/<node>/` after every
    advance (run a node exporter per node with `--path.sysfs=sysfs_root/<node>`)."""

    def __init__(self, twin: Twin, speed: float = 1.0, tick_s: float = 0.05,
                 sysfs_root: Path | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.twin = twin
        self.speed = speed
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twin-clock", daemon=True)
        self.error: BaseException | None = None
        self._origin = (time.monotonic(), twin.t)
        self.sysfs_root = sysfs_root
        if sysfs_root is not None:
            self._write_sysfs()

    def _write_sysfs(self) -> None:
        assert self.sysfs_root is not None
        for node in self.twin.nodes:
            self.twin.write_sysfs(self.sysfs_root / node, node)

    def now(self) -> float:
        """Simulated time now (unix seconds): what the twin's clock is advancing to. Continuous, unlike the
        twin's own time, which moves a step at a time."""
        origin_real, origin_sim = self._origin
        return min(origin_sim + (time.monotonic() - origin_real) * self.speed, self.twin.end)

    def start(self) -> None:
        self._origin = (time.monotonic(), self.twin.t)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        origin_real, origin_sim = self._origin
        try:
            while not self._stop.is_set() and not self.twin.finished:
                target = origin_sim + (time.monotonic() - origin_real) * self.speed
                if self.twin.advance_to(target) and self.sysfs_root is not None:
                    self._write_sysfs()
                self._stop.wait(self.tick_s)
        except BaseException as exc:  # surfaced by the caller; the server keeps serving the last state
            self.error = exc
            raise
