"""The action catalogue: one declarative definition per runbook and the typed steps that carry it out.

Callers use only what this module exports: build a `Catalogue` with `default_catalogue(settings)`, then
`validate`, `risk_for`, `preconditions`, `dry_run`, `execute`, `verify` and `rollback` a `Plan` with a
`RunbookContext` (the cluster port, injectable time, the audit hook).
"""

from __future__ import annotations

from runbooks.catalogue import Catalogue
from runbooks.context import RunbookContext
from runbooks.definition import Runbook, RunbookDefinition, StepKind, check_signature
from runbooks.errors import (
    IncompleteRunbook,
    InvalidPlan,
    RunbookError,
    StepSignatureError,
    UnknownRunbook,
)
from runbooks.model import Diff, InvalidTarget, Plan, Risk, StepResult, Target, TargetKind
from runbooks.settings import ReplicaBounds, RunbookSettings

__all__ = [
    "Catalogue",
    "Diff",
    "IncompleteRunbook",
    "InvalidPlan",
    "InvalidTarget",
    "Plan",
    "ReplicaBounds",
    "Risk",
    "Runbook",
    "RunbookContext",
    "RunbookDefinition",
    "RunbookError",
    "RunbookSettings",
    "StepKind",
    "StepResult",
    "StepSignatureError",
    "Target",
    "TargetKind",
    "UnknownRunbook",
    "check_signature",
    "default_catalogue",
]


def default_catalogue(settings: RunbookSettings | None = None) -> Catalogue:
    """A fresh catalogue holding every runbook gpuops ships."""
    from runbooks import (
        cordon,
        drain,
        fence_gpu,
        hardware_ticket,
        isolate_gpu,
        notify,
        reboot,
        reschedule,
        reset_gpu,
        restart_pod,
        scale,
        taint,
    )

    return Catalogue(
        [
            cordon.CORDON,
            cordon.UNCORDON,
            drain.DRAIN,
            reset_gpu.RESET,
            fence_gpu.FENCE,
            isolate_gpu.ISOLATE,
            reboot.REBOOT,
            reschedule.RESCHEDULE,
            restart_pod.RESTART,
            scale.SCALE,
            taint.TAINT,
            taint.UNTAINT,
            taint.TAINT_PORT,
            hardware_ticket.TICKET,
            notify.NOTIFY,
        ],
        settings,
    )
