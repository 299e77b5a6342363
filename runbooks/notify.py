"""notify_only: tell the humans, change nothing. The caller delivers the notification it returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from runbooks.context import RunbookContext
from runbooks.definition import Runbook, RunbookDefinition
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind


class NotifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=4000, description="what the humans should know")
    severity: Literal["info", "warning", "critical"] = "warning"


NOTIFY = Runbook[NotifyParams](
    RunbookDefinition(
        name="notify_only",
        title="Notify only",
        description="Record a notification for the on-call humans; touches nothing in the cluster.",
        risk=Risk.LOW,
        target_kind=TargetKind.NONE,
        max_targets=0,
        params_model=NotifyParams,
        disruptive=False,
        auto_approvable=True,
        expected_effect="a notification is recorded for delivery; the cluster is unchanged",
        verify_deadline_s=1,
        has_rollback=False,
    )
)


@NOTIFY.precondition
def _pre(plan: Plan, params: NotifyParams, ctx: RunbookContext) -> list[str]:
    return []


@NOTIFY.dry_run
def _dry(plan: Plan, params: NotifyParams, ctx: RunbookContext) -> Diff:
    return Diff(changes=[f"notify ({params.severity}): {params.message}"])


@NOTIFY.step
def _notify(plan: Plan, params: NotifyParams, ctx: RunbookContext) -> StepResult:
    note = {
        "message": params.message,
        "severity": params.severity,
        "incident_id": ctx.incident_id,
        "actor": ctx.actor,
        "at": ctx.clock(),
    }
    return StepResult(True, "notification recorded", {"notification": note})


@NOTIFY.verify
def _verify(plan: Plan, params: NotifyParams, ctx: RunbookContext) -> StepResult:
    return StepResult(True, "nothing to verify: notify_only changes nothing in the cluster")
