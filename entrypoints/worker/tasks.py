"""The tasks: one per pipeline step, each a thin wrapper that hands its payload to the worker's pipeline
(`gpuops.pipeline`), whose dispatcher enqueues the next step on the broker. The base task class validates,
retries transient errors and dead-letters the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any

from celery import Celery

from entrypoints.worker.base import GpuopsTask
from entrypoints.worker.errors import PoisonMessage
from entrypoints.worker.runtime import HARD_MARGIN_S, pipeline_of, runtime_of, soft_limits, worker_name
from gpuops.pipeline import QUEUE_OF, QUEUES, Step
from gpuops.pipeline.service import InvalidStep
from gpuops.pipeline.steps import ACTIONS_QUEUE, CYCLES_QUEUE, INCIDENTS_QUEUE

DETECT, INCIDENT_UPDATE, AGENT_STEP = Step.DETECT.value, Step.INCIDENT_CHANGED.value, Step.AGENT_STEP.value
EXECUTE, VERIFY, SWEEP = Step.EXECUTE.value, Step.VERIFY.value, Step.SWEEP.value
RETURN_NODE = Step.RETURN_NODE.value
AUTOSCALE = Step.AUTOSCALE.value
ROUTES = {step.value: queue for step, queue in QUEUE_OF.items()}
__all__ = ["ACTIONS_QUEUE", "AGENT_STEP", "AUTOSCALE", "CYCLES_QUEUE", "DETECT", "EXECUTE", "INCIDENTS_QUEUE",
           "INCIDENT_UPDATE", "QUEUES", "RETURN_NODE", "ROUTES", "SWEEP", "VERIFY", "register", "worker_name"]


def _result(value: Any) -> Any:
    """A task's JSON result (tasks ignore results on the broker; the eager runs and tests read them)."""
    if is_dataclass(value) and not isinstance(value, type):
        data = asdict(value)
        if "findings" in data:  # a cycle's findings stay in the store; the result says how many
            data["findings"] = len(data["findings"])
            data.pop("incidents", None)
        return data
    return value


def register(app: Celery) -> None:
    """Define one task per pipeline step on `app` (each app gets its own, so tests and processes never share
    state)."""
    settings = runtime_of(app).settings
    limits = soft_limits(settings)

    def define(step: Step) -> None:
        def run(self: GpuopsTask, **payload: Any) -> Any:
            try:
                return _result(pipeline_of(self.app).run(step, payload))
            except InvalidStep as exc:
                raise PoisonMessage(str(exc)) from exc

        run.__name__ = run.__qualname__ = step.name.lower()
        run.__doc__ = f"The pipeline's {step.name.lower().replace('_', ' ')} step."
        decorator: Callable[[Callable[..., Any]], Any] = app.task(
            name=step.value, base=GpuopsTask, bind=True, shared=False, soft_time_limit=limits[step.value],
            time_limit=limits[step.value] + HARD_MARGIN_S, max_retries=settings.task_max_retries)
        decorator(run)

    for step in Step:
        define(step)
