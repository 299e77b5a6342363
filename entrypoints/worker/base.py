"""The behaviour every gpuops task shares: payload validation, a delivery count that stops a message that
keeps killing workers, retries with backoff on transient errors only, and dead letters for the rest."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from entrypoints.worker.errors import TRANSIENT_ERRORS, PoisonMessage
from entrypoints.worker.runtime import runtime_of
from gpuops.errors import GpuopsError
from gpuops.store.models import DeadLetter

log = logging.getLogger(__name__)

_PASS_THROUGH = (Retry, Ignore, Reject)


class GpuopsTask(Task):  # type: ignore[misc]
    """Base class: acks late (a worker lost mid-task leaves the message for another), retries only the
    named transient errors with exponential backoff and jitter, dead-letters everything else."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    acks_late = True
    reject_on_worker_lost = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        runtime = runtime_of(self.app)
        task_id = self.request.id
        deliveries = runtime.count_delivery(task_id)
        if deliveries > runtime.max_deliveries:
            return self.dead_letter("too_many_deliveries", f"delivered {deliveries} times", args, kwargs,
                                    deliveries)
        try:
            if args:
                raise PoisonMessage(f"{self.name} takes keyword arguments only, got {len(args)} positional")
            return super().__call__(**kwargs)
        except Retry as retry:
            log.warning("transient failure, retrying", extra={"task": self.name, "task_id": task_id,
                                                              "error": repr(retry.exc), "when": str(retry.when)})
            raise
        except _PASS_THROUGH:
            raise
        except (ValidationError, PoisonMessage) as exc:
            return self.dead_letter("invalid_payload", str(exc), args, kwargs, deliveries)
        except Exception as exc:
            transient = isinstance(exc, TRANSIENT_ERRORS)
            why = "transient error, retries exhausted" if transient else "failed"
            self.dead_letter("failed", f"{why}: {type(exc).__name__}: {exc}", args, kwargs, deliveries)
            raise

    def dead_letter(self, reason: str, error: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                    deliveries: int) -> dict[str, Any]:
        """Record the message in the store (or, when the store is down, in the broker's list) and ack it."""
        runtime = runtime_of(self.app)
        task_id = str(self.request.id or "")
        payload = {"args": _jsonable(list(args)), "kwargs": _jsonable(kwargs)}
        record = {"task": self.name, "task_id": task_id, "payload": payload, "reason": reason,
                  "error": error[:4000], "deliveries": deliveries}
        log.error("dead letter", extra={"task": self.name, "task_id": task_id, "reason": reason, "error": error})
        try:
            with runtime.container.uow() as uow:
                uow.session.add(DeadLetter(**record))
                uow.commit()
        except (GpuopsError, SQLAlchemyError) as exc:
            if not runtime.push_dead_letter(record):
                log.error("dead letter lost: neither the store nor the broker took it (%s)", exc)
        return {"dead_letter": reason, "error": error}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
