"""The twin on the network: one ASGI app serving `/metrics` and the Kubernetes API, and a clock
that advances the twin at `speed` times real time."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from typing import Any, cast

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


class TwinClock:
    """Advances a twin in a background thread so that simulated time runs at `speed` × real time."""

    def __init__(self, twin: Twin, speed: float = 1.0, tick_s: float = 0.05) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.twin = twin
        self.speed = speed
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twin-clock", daemon=True)
        self.error: BaseException | None = None
        self._origin = (time.monotonic(), twin.t)

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
                self.twin.advance_to(target)
                self._stop.wait(self.tick_s)
        except BaseException as exc:  # surfaced by the caller; the server keeps serving the last state
            self.error = exc
            raise
