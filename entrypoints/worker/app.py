"""The Celery app, built from the settings by `create_app` (nothing is built at import time). Embedded mode
(no broker) runs every task eagerly in the calling process; distributed mode uses Redis."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from celery import Celery

from entrypoints.worker import tasks
from entrypoints.worker.runtime import HARD_MARGIN_S, Wiring, WorkerRuntime, load_wiring, soft_limits
from gpuops.autoscale.settings import AutoscaleSettings, load_autoscale_settings
from gpuops.config import Settings
from gpuops.errors import ConfigError


def visibility_timeout(settings: Settings) -> float:
    """How long Redis waits before handing an unacknowledged message to another worker. It must exceed the
    longest task's hard time limit, or a task still running would be delivered twice."""
    longest = max(soft_limits(settings).values()) + HARD_MARGIN_S
    chosen = settings.visibility_timeout_seconds
    if chosen is None:
        return longest + 60.0
    if chosen <= longest:
        raise ConfigError(f"GPUOPS_VISIBILITY_TIMEOUT_SECONDS={chosen:g} must exceed the longest task time limit "
                          f"({longest:g}s, from GPUOPS_CLAIM_TTL_SECONDS and GPUOPS_CYCLE_SECONDS), or a running "
                          "task would be delivered twice")
    return chosen


def cycle_end(now: float, cycle_seconds: float) -> float:
    """The data time of the cycle due at `now`: the last multiple of the cycle length. Every beat computes
    the same value, so a second beat only duplicates messages that the cycle's lock turns into no-ops."""
    return math.floor(now / cycle_seconds) * cycle_seconds


def beat_schedule(settings: Settings, autoscale: AutoscaleSettings | None = None) -> dict[str, dict[str, Any]]:
    """One cycle entry per shard (the scheduler adds each message's `end`), the sweep (soaked holds,
    expired approvals, actions whose executor or message was lost), and the autoscaling cycle when
    GPUOPS_AUTOSCALE_ENABLED (every GPUOPS_AUTOSCALE_PERIOD_SECONDS)."""
    every = timedelta(seconds=settings.cycle_seconds)
    schedule: dict[str, dict[str, Any]] = {
        f"cycle-{shard}-of-{settings.shards}": {"task": tasks.DETECT, "schedule": every,
                                                "kwargs": {"shard": shard, "shards": settings.shards}}
        for shard in range(settings.shards)
    }
    schedule["sweep"] = {"task": tasks.SWEEP, "schedule": timedelta(seconds=settings.sweep_seconds)}
    autoscale = autoscale or load_autoscale_settings()
    if autoscale.enabled:
        schedule["autoscale"] = {"task": tasks.AUTOSCALE, "schedule": timedelta(seconds=autoscale.period_seconds)}
    return schedule


def create_app(settings: Settings, *, wiring: Wiring | None = None) -> Celery:
    """The Celery app for these settings. `wiring` builds the container in each worker process on first use
    (default: GPUOPS_WORKER_WIRING, else gpuops.wiring.bootstrap)."""
    app = Celery("gpuops", set_as_current=False)
    app.gpuops_runtime = WorkerRuntime(settings, wiring or load_wiring(settings.worker_wiring))
    visibility = visibility_timeout(settings)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, result_backend=None,
        task_acks_late=True, task_reject_on_worker_lost=True, task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1, worker_max_tasks_per_child=1000,
        task_routes={name: {"queue": queue} for name, queue in tasks.ROUTES.items()},
        task_default_queue=tasks.INCIDENTS_QUEUE,
        task_create_missing_queues=True,
        beat_schedule=beat_schedule(settings),
        timezone="UTC", enable_utc=True,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        # a task running when the broker connection drops can no longer ack; its message comes back anyway
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    if settings.broker_url is None:
        app.conf.update(broker_url="memory://", task_always_eager=True, task_eager_propagates=False,
                        task_store_eager_result=False)
    else:
        app.conf.update(
            broker_url=settings.broker_url,
            broker_transport="entrypoints.worker.transport:Transport",
            broker_transport_options={
                "visibility_timeout": visibility,
                # look for messages of lost workers a few times per visibility timeout, not every 100 s
                "unacked_restore_interval": max(1.0, min(60.0, visibility / 4)), "unacked_restore_throttle": 1,
                "socket_timeout": 10, "socket_connect_timeout": 10, "retry_on_timeout": True,
                "health_check_interval": 10},
            broker_heartbeat=0,
        )
    tasks.register(app)
    return app
