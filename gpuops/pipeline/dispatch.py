"""How a use case asks for the next step: a dispatcher. Production enqueues steps on the broker (each runs on
some worker later); the embedded daemon, the evaluation and the CLI run them in order, in one thread, when
they drain. The use cases are the same whichever runs them."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gpuops.pipeline.steps import QUEUE_OF, Step

log = logging.getLogger(__name__)

Handler = Callable[[Step, dict[str, Any]], Any]


class Dispatcher(Protocol):
    def dispatch(self, step: Step, payload: Mapping[str, Any], *, delay_s: float = 0.0) -> None:
        """Run `step` with `payload` later (not before `delay_s` seconds of the pipeline's clock)."""
        ...


class OrderedDispatcher:
    """Steps run in the order they were dispatched (a delayed step once the clock reaches it), in the thread
    that calls `drain`. `bind` names the handler (the pipeline's `run`); `on_dispatch` wakes the thread that
    drains (the embedded daemon's, when an HTTP handler records a decision)."""

    def __init__(self, clock: Callable[[], float], *, on_dispatch: Callable[[], None] | None = None) -> None:
        self.clock = clock
        self.on_dispatch = on_dispatch
        self._handler: Handler | None = None
        self._queue: list[tuple[float, int, Step, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.ran: list[tuple[Step, dict[str, Any]]] = []  # every step run, in order (the evaluation reports it)

    def bind(self, handler: Handler) -> None:
        self._handler = handler

    def dispatch(self, step: Step, payload: Mapping[str, Any], *, delay_s: float = 0.0) -> None:
        with self._lock:
            heapq.heappush(self._queue, (self.clock() + max(delay_s, 0.0), next(self._seq), step, dict(payload)))
        if self.on_dispatch is not None:
            self.on_dispatch()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def queued(self) -> list[tuple[Step, dict[str, Any]]]:
        """The steps waiting, in the order they will run."""
        with self._lock:
            return [(step, dict(payload)) for _, _, step, payload in sorted(self._queue)]

    def next_due(self) -> float | None:
        """The clock time at which the next step is due, or None when nothing waits."""
        with self._lock:
            return self._queue[0][0] if self._queue else None

    def _next_due(self) -> tuple[Step, dict[str, Any]] | None:
        with self._lock:
            if not self._queue or self._queue[0][0] > self.clock():
                return None
            _, _, step, payload = heapq.heappop(self._queue)
            return step, payload

    def drain(self) -> int:
        """Run every step that is due, including those the steps dispatch; returns how many ran."""
        if self._handler is None:
            raise RuntimeError("the dispatcher has no handler: call bind() first")
        count = 0
        while (due := self._next_due()) is not None:
            step, payload = due
            self.ran.append((step, payload))
            self._handler(step, payload)
            count += 1
        return count


class BrokerDispatcher:
    """Distributed mode: each step is a message on the broker, taken by any worker (see the worker's tasks,
    which carry the same names). In a process whose Celery app defines the tasks (a worker), they are sent
    through them (so an eager app runs them in place); elsewhere (the API, the CLI) by name."""

    def __init__(self, broker_url: str, *, app: Any = None) -> None:
        if app is None:
            from celery import Celery

            app = Celery("gpuops-sender", broker=broker_url, set_as_current=False)
        self.app = app

    def dispatch(self, step: Step, payload: Mapping[str, Any], *, delay_s: float = 0.0) -> None:
        countdown = delay_s if delay_s > 0 else None
        task = self.app.tasks.get(str(step)) if self.app.tasks is not None else None
        if task is not None:
            task.apply_async(kwargs=dict(payload), queue=QUEUE_OF[step], countdown=countdown)
        else:
            self.app.send_task(str(step), kwargs=dict(payload), queue=QUEUE_OF[step], countdown=countdown)


class ThreadedDispatcher(OrderedDispatcher):
    """For a process that records decisions but runs no scheduler (`gpuops api` without a broker): each
    dispatch wakes one background thread that drains the queue in order, so the caller answers at once."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock, on_dispatch=self._start)
        self._runner: threading.Thread | None = None
        self._runner_lock = threading.Lock()

    def _start(self) -> None:
        with self._runner_lock:
            if self._runner is None or not self._runner.is_alive():
                self._runner = threading.Thread(target=self._drain_all, name="gpuops-steps", daemon=True)
                self._runner.start()

    def _drain_all(self) -> None:
        while True:
            try:
                self.drain()
            except Exception:
                log.exception("a step failed; the sweep picks up what it left")
                continue
            with self._runner_lock:
                due = self.next_due()
                if due is None or due > self.clock():
                    self._runner = None
                    return
