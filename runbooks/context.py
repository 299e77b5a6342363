"""What steps get: the cluster port, injectable time, who acts for which incident, and the audit hook."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from connectors.kubernetes import ClusterPort
from runbooks.model import StepResult
from runbooks.settings import RunbookSettings

T = TypeVar("T")


def _ignore_step(name: str, result: StepResult) -> None:
    """The default audit hook: the executor passes its own."""


def no_withheld_gpus(node: str) -> tuple[int, ...]:
    """The default: no GPU is known to be withheld on any node."""
    return ()


def no_gpu_uuid(incident_id: int | None, node: str, gpu: int) -> str | None:
    """The default: no GPU's UUID is known."""
    return None


@dataclass
class RunbookContext:
    """Steps reach the cluster only through `cluster`, and time only through `clock` and `sleep`."""

    cluster: ClusterPort
    settings: RunbookSettings = field(default_factory=RunbookSettings)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    incident_id: int | None = None
    actor: str = "gpuops"
    action_id: int | None = None
    """The stored action this run carries out: two actions of one incident with the same plan (the incident
    reopened when its fault came back) are two runs, and their node requests must not be taken for each other."""
    on_step: Callable[[str, StepResult], None] = _ignore_step
    withheld_gpus: Callable[[str], tuple[int, ...]] = no_withheld_gpus
    """The GPUs of a node that gpuops returned to service without (the device plugin withholds them until their
    repair): a node short of just those reports all it can."""
    gpu_uuid: Callable[[int | None, str, int], str | None] = no_gpu_uuid
    """The UUID the telemetry gave a node's GPU (by index) in an incident's findings: a request to the node agent
    names it, so that a GPU renumbered since (NVML numbers the GPUs it sees) is never taken for another."""

    def poll(self, deadline_s: float, check: Callable[[], T | None], interval_s: float | None = None) -> T | None:
        """Call `check` until it returns something other than None, or `deadline_s` of clock time pass.

        Checks once more at the deadline, so a change made in the last interval is still seen. The number
        of checks is bounded too, so a clock that does not move cannot make the wait endless.
        """
        interval = interval_s if interval_s is not None else self.settings.poll_interval_s
        end = self.clock() + deadline_s
        for _ in range(math.ceil(max(deadline_s, 0) / interval) + 2):
            found = check()
            if found is not None:
                return found
            left = end - self.clock()
            if left <= 0:
                return None
            self.sleep(min(interval, left))
        return None

    def incident_label(self) -> str | None:
        return f"incident-{self.incident_id}" if self.incident_id is not None else None

    def request_label(self) -> str:
        """A short tag naming who asked, written into annotations and node requests."""
        return f"incident-{self.incident_id}" if self.incident_id is not None else self.actor
