"""Serve a KubeState's API in a background thread, with simulated time running at a chosen speed.

Used by tests, benchmarks and the `gpuops kube-twin` command: uvicorn on a free 127.0.0.1 port,
and a ticker thread that advances a simulated clock at `speed` x real time and calls `state.tick()`.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from simulator.kube.api import build_app
from simulator.kube.state import KubeState

DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class SimClock:
    """Simulated unix seconds, advanced explicitly (thread-safe)."""

    def __init__(self, start: float = DEFAULT_START) -> None:
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
    """A KubeState behind a real HTTP server, with a ticker running simulated time at `speed` x real time."""

    def __init__(
        self,
        speed: float = 100.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tick_seconds: float = 0.01,
        **state_options: Any,
    ) -> None:
        if speed <= 0 or tick_seconds <= 0:
            raise ValueError("speed and tick_seconds must be positive")
        self.clock = SimClock()
        self.state = KubeState(self.clock, **state_options)
        self.speed = speed
        self.tick_seconds = tick_seconds
        # IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted connections (no 40 ms delayed-ACK stalls).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(build_app(self.state), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True),
            threading.Thread(target=self._tick, daemon=True),
        ]
        self.tick_errors: list[BaseException] = []

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.state.tick(self.clock.advance(self.tick_seconds * self.speed))
            except BaseException as exc:  # surfaced by stop(), never swallowed
                self.tick_errors.append(exc)
                return

    def start(self, timeout: float = 10.0) -> KubeTwin:
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._threads[0].is_alive():
                self.stop()
                raise RuntimeError(f"the twin's API server did not start on {self.url} within {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and ticking; re-raise the first error the ticker met."""
        self._stop.set()
        self._server.should_exit = True
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=10)
        self._sock.close()
        if self.tick_errors:
            raise self.tick_errors[0]

    def __enter__(self) -> KubeTwin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
