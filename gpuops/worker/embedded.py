"""Embedded mode: the beat's schedule driven in one process, running the same tasks eagerly (no broker)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from celery import Celery

from gpuops.worker import tasks
from gpuops.worker.app import EXPIRE_EVERY_S, cycle_end, runtime_of

log = logging.getLogger(__name__)


class EmbeddedScheduler:
    """Runs each shard's cycle once per cycle boundary, the action sweep (with the release of soaked holds) and
    approval expiry on their own periods. `run_due(now)` does one round; `run_forever` loops until `stop()`.
    `clock` may run faster than real time (the demo's simulated fleet): `rate` says how much faster, so waits
    shrink to match."""

    def __init__(self, app: Celery, clock: Callable[[], float] = time.time, rate: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError("the clock's rate must be positive")
        self.app = app
        self.rate = rate
        self.settings = runtime_of(app).settings
        self.clock = clock
        self._stopped = threading.Event()
        self._last_end = 0.0
        self._next_sweep = 0.0
        self._next_expire = 0.0

    def run_due(self, now: float) -> list[str]:
        ran: list[str] = []
        end = cycle_end(now, self.settings.cycle_seconds)
        if end > self._last_end:
            for shard in range(self.settings.shards):
                self._run(tasks.DETECT, {"shard": shard, "shards": self.settings.shards, "end": end})
            self._last_end = end
            ran.append(tasks.DETECT)
        if now >= self._next_sweep:
            self._run(tasks.SWEEP, {})
            self._run(tasks.RELEASE, {})
            self._next_sweep = now + self.settings.sweep_seconds
            ran.extend((tasks.SWEEP, tasks.RELEASE))
        if now >= self._next_expire:
            self._run(tasks.EXPIRE, {})
            self._next_expire = now + EXPIRE_EVERY_S
            ran.append(tasks.EXPIRE)
        return ran

    def _run(self, name: str, kwargs: dict[str, object]) -> None:
        result = self.app.tasks[name].apply(kwargs=kwargs)
        if result.failed():
            log.error("embedded task failed; it runs again next round",
                      extra={"task": name, "error": repr(result.result)})

    def run_forever(self) -> None:
        while not self._stopped.is_set():
            self.run_due(self.clock())
            now = self.clock()
            wake = min(cycle_end(now, self.settings.cycle_seconds) + self.settings.cycle_seconds,
                       self._next_sweep, self._next_expire)
            self._stopped.wait(max(0.05, (wake - now) / self.rate))

    def stop(self) -> None:
        self._stopped.set()
