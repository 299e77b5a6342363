"""The runbooks' errors, all under gpuops' one exception tree."""

from __future__ import annotations

from domain.errors import GpuopsError


class RunbookError(GpuopsError):
    """Base of every error the runbooks package raises on purpose."""


class UnknownRunbook(RunbookError):
    """A plan names a runbook the catalogue does not have."""


class InvalidPlan(RunbookError):
    """A plan's parameters or targets do not fit its runbook; the message says which and why."""


class StepSignatureError(RunbookError):
    """A step function was registered with a signature the registry does not accept."""


class IncompleteRunbook(RunbookError):
    """A runbook lacks a part every runbook must have (a verify, a dry run, its declared rollback)."""
