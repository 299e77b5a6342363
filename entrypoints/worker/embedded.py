"""Embedded mode: the beat's schedule and the workers in one process, without a broker. One thread runs every
step of the pipeline in order: the cycles and the sweep when they are due, and what they (or a decision from
the dashboard, which only dispatches) hand on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from entrypoints.worker.app import cycle_end
from entrypoints.worker.errors import TRANSIENT_ERRORS
from gpuops.autoscale.settings import AutoscaleSettings, load_autoscale_settings
from gpuops.pipeline import OrderedDispatcher, Pipeline, Step
from gpuops.wiring import Container

log = logging.getLogger(__name__)


class EmbeddedScheduler:
    """Runs each shard's cycle once per cycle boundary and the sweep on its period, then every step they
    dispatched. `run_due(now)` does one round; `run_forever` loops until `stop()`. `clock` may run faster than
    real time (the demo's simulated fleet): `rate` says how much faster, so waits shrink to match."""

    def __init__(self, container: Container, clock: Callable[[], float] = time.time, rate: float = 1.0,
                 autoscale: AutoscaleSettings | None = None) -> None:
        """`autoscale`: the autoscaling cycle's settings (default: GPUOPS_AUTOSCALE_*); it runs when enabled."""
        if rate <= 0:
            raise ValueError("the clock's rate must be positive")
        self.rate = rate
        self.settings = container.settings
        self.clock = clock
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self.dispatcher = OrderedDispatcher(clock, on_dispatch=self._wake.set)
        self.pipeline = Pipeline(container, self.dispatcher, clock=clock, sleep=self._sleep)
        self.dispatcher.bind(self._run_step)
        self._last_end = 0.0
        self._next_sweep = 0.0
        self.autoscale = autoscale or load_autoscale_settings()
        self._next_autoscale = 0.0

    def _sleep(self, seconds: float) -> None:
        self._stopped.wait(max(seconds, 0.0) / self.rate)

    def _run_step(self, step: Step, payload: dict[str, object]) -> None:
        try:
            self.pipeline.run(step, payload)
        except TRANSIENT_ERRORS as exc:  # a source that is down: one line a step, not a traceback every cycle
            log.error("embedded step failed: %s", exc, extra={"task": str(step), "error": type(exc).__name__})
        except Exception:  # one failed step never stops the daemon; the sweep retries what it left
            log.exception("embedded step failed", extra={"task": str(step)})

    def run_due(self, now: float) -> list[str]:
        """Dispatch the cycles and the sweep due at `now`, then run everything due. Returns what was due."""
        ran: list[str] = []
        end = cycle_end(now, self.settings.cycle_seconds)
        if end > self._last_end:
            for shard in range(self.settings.shards):
                self.dispatcher.dispatch(Step.DETECT, {"shard": shard, "shards": self.settings.shards, "end": end})
            self._last_end = end
            ran.append(Step.DETECT.value)
        if now >= self._next_sweep:
            self.dispatcher.dispatch(Step.SWEEP, {})
            self._next_sweep = now + self.settings.sweep_seconds
            ran.append(Step.SWEEP.value)
        if self.autoscale.enabled and now >= self._next_autoscale:
            self.dispatcher.dispatch(Step.AUTOSCALE, {})
            self._next_autoscale = now + self.autoscale.period_seconds
            ran.append(Step.AUTOSCALE.value)
        self.dispatcher.drain()
        return ran

    def run_forever(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            self.run_due(self.clock())
            now = self.clock()
            wake = min(cycle_end(now, self.settings.cycle_seconds) + self.settings.cycle_seconds, self._next_sweep,
                       self._next_autoscale if self.autoscale.enabled else float("inf"),
                       self.dispatcher.next_due() or float("inf"))
            self._wake.wait(max(0.05, (wake - now) / self.rate))

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
