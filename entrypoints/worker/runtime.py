"""What a worker process holds: the settings, and the wiring container and broker connection built on first
use (after the pool forks, so no engine or socket is shared between processes)."""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from gpuops.config import Settings
from gpuops.errors import ConfigError
from gpuops.pipeline import BrokerDispatcher, Pipeline, Step
from gpuops.wiring import Container, bootstrap

log = logging.getLogger(__name__)

Wiring = Callable[[Settings], Container]
DELIVERIES_KEY = "gpuops:deliveries:"
DEAD_LETTER_LIST = "gpuops:dead_letters"
HARD_MARGIN_S = 5.0


def load_wiring(spec: str | None) -> Wiring:
    """`module:function` taking Settings and returning a Container (default: gpuops.wiring.bootstrap)."""
    if not spec:
        return lambda settings: bootstrap(settings)
    module_name, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"GPUOPS_WORKER_WIRING: cannot load {spec!r} ({exc}); expected module:function") from exc
    wiring: Wiring = found
    return wiring


@dataclass
class WorkerRuntime:
    settings: Settings
    wiring: Wiring
    _container: Container | None = None
    _redis: redis.Redis | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def container(self) -> Container:
        with self._lock:
            if self._container is None:
                self._container = self.wiring(self.settings)
            return self._container

    @property
    def broker(self) -> redis.Redis | None:
        """The broker's Redis, for delivery counts and the fallback dead-letter list (None when embedded)."""
        if self.settings.broker_url is None:
            return None
        with self._lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(self.settings.broker_url, socket_timeout=5,
                                                   socket_connect_timeout=5)
            return self._redis

    @property
    def max_deliveries(self) -> int:
        return self.settings.task_max_retries + 3

    def count_delivery(self, task_id: str | None) -> int:
        """How many times this task id reached a worker (redeliveries and retries included)."""
        client = self.broker
        if client is None or not task_id:
            return 1
        try:
            key = DELIVERIES_KEY + task_id
            pipe = client.pipeline()
            pipe.incr(key)
            pipe.expire(key, 7 * 86400)
            count, _ = pipe.execute()
            return int(count)
        except redis.RedisError as exc:
            log.warning("cannot count deliveries: %s", exc)
            return 1

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def push_dead_letter(self, record: dict[str, Any]) -> bool:
        client = self.broker
        if client is None:
            return False
        import json

        try:
            client.lpush(DEAD_LETTER_LIST, json.dumps(record, default=str))
            return True
        except redis.RedisError:
            return False


def runtime_of(app: Celery) -> WorkerRuntime:
    runtime: WorkerRuntime = app.gpuops_runtime
    return runtime


def worker_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def soft_limits(settings: Settings) -> dict[str, float]:
    """Each task's soft time limit (the hard limit is HARD_MARGIN_S later). Execution gets the action's
    claim: a drain that outlives its claim could be taken over while still running. An agent step executes
    the actions it was approved for, and a node's return its uncordon, so they get the claim too."""
    cap = settings.task_time_limit_seconds
    short = min(60.0, cap)
    limits = {Step.DETECT: min(4 * settings.cycle_seconds, cap), Step.INCIDENT_CHANGED: short,
            Step.AGENT_STEP: max(cap, settings.claim_ttl_seconds), Step.EXECUTE: settings.claim_ttl_seconds,
            Step.VERIFY: min(300.0, cap), Step.SWEEP: short, Step.RETURN_NODE: settings.claim_ttl_seconds,
            Step.AUTOSCALE: settings.claim_ttl_seconds}  # it executes the scale actions policy approved
    return {str(step): limit for step, limit in limits.items()}


def pipeline_of(app: Celery) -> Pipeline:
    """The worker process's pipeline: its container, with a dispatcher that enqueues each next step."""
    runtime = runtime_of(app)
    pipeline: Pipeline | None = getattr(app, "gpuops_pipeline", None)
    if pipeline is None:
        pipeline = Pipeline(runtime.container, BrokerDispatcher(runtime.settings.broker_url or "memory://", app=app),
                            worker=worker_name())
        app.gpuops_pipeline = pipeline
    return pipeline
