"""The beat: Celery's scheduler, stamping each detection message with its cycle's data time."""

from __future__ import annotations

import copy
import time
from typing import Any

from celery.beat import ScheduleEntry, Scheduler

from entrypoints.worker import tasks
from entrypoints.worker.app import cycle_end
from entrypoints.worker.runtime import runtime_of


class CycleScheduler(Scheduler):  # type: ignore[misc]
    """An in-memory schedule (nothing to persist: a restarted beat at worst repeats a cycle, which is a no-op)
    whose detection entries carry `end`, the cycle's data time, computed when the message is sent."""

    def apply_async(self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        if entry.task == tasks.DETECT:
            cycle_s = runtime_of(self.app).settings.cycle_seconds
            entry = copy.copy(entry)
            entry.kwargs = {**entry.kwargs, "end": cycle_end(time.time(), cycle_s)}
        return super().apply_async(entry, producer, advance, **kwargs)
