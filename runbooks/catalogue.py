"""The catalogue: every runbook by name, and the one path through which a plan is validated,
judged, dry-run, executed, verified and rolled back."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError

from connectors.kubernetes import ClusterError
from domain.errors import GpuopsError
from runbooks.context import RunbookContext
from runbooks.definition import RegisteredStep, Runbook, RunbookDefinition, StepKind
from runbooks.errors import IncompleteRunbook, InvalidPlan, UnknownRunbook
from runbooks.model import Diff, Plan, Risk, StepResult, Target, TargetKind
from runbooks.settings import RunbookSettings

log = logging.getLogger(__name__)


class Catalogue:
    """Runbooks by name. Every operation validates the plan first and never raises for a cluster failure:
    failures come back as a StepResult with ok=False. The catalogue's settings are the ones that apply:
    steps see them as `ctx.settings`, whatever the context passed in carried."""

    def __init__(self, runbooks: Iterable[Runbook[Any]] = (), settings: RunbookSettings | None = None) -> None:
        self.settings = settings or RunbookSettings()
        self._runbooks: dict[str, Runbook[Any]] = {}
        for runbook in runbooks:
            self.register(runbook)

    def register(self, runbook: Runbook[Any]) -> None:
        """Add a runbook; IncompleteRunbook when it lacks a required part or its name is taken."""
        name = runbook.name
        if name in self._runbooks:
            raise IncompleteRunbook(f"runbook {name} is already in the catalogue")
        missing = [k for k in (StepKind.PRECONDITION, StepKind.DRY_RUN, StepKind.VERIFY) if not runbook.part(k)]
        if not runbook.steps:
            missing.append(StepKind.STEP)
        if missing:
            raise IncompleteRunbook(f"runbook {name} has no {', '.join(missing)}")
        has_rollback = runbook.part(StepKind.ROLLBACK) is not None
        if has_rollback != runbook.definition.has_rollback:
            raise IncompleteRunbook(
                f"runbook {name} declares has_rollback={runbook.definition.has_rollback} "
                f"but {'has' if has_rollback else 'registers no'} rollback"
            )
        self._runbooks[name] = runbook

    def names(self) -> list[str]:
        return sorted(self._runbooks)

    def get(self, name: str) -> RunbookDefinition:
        return self._runbook(name).definition

    def runbook(self, name: str) -> Runbook[Any]:
        """The runbook itself (definition and registered functions); UnknownRunbook if absent."""
        return self._runbook(name)

    def definitions(self) -> list[RunbookDefinition]:
        return [self._runbooks[n].definition for n in self.names()]

    def _runbook(self, name: str) -> Runbook[Any]:
        try:
            return self._runbooks[name]
        except KeyError:
            raise UnknownRunbook(f"no runbook named {name!r}; the catalogue has {', '.join(self.names())}") from None

    # ------------------------------------------------------------------ validation

    def validate(self, plan: Plan) -> Plan:
        """The plan with its parameters validated and normalised; InvalidPlan (with pydantic's message)."""
        runbook = self._runbook(plan.runbook)
        definition = runbook.definition
        if not isinstance(plan.params, dict):
            raise InvalidPlan(f"{plan.runbook}: params must be an object, got {type(plan.params).__name__}")
        try:
            params = definition.params_model.model_validate(plan.params)
        except ValidationError as exc:
            raise InvalidPlan(f"{plan.runbook}: invalid parameters: {exc}") from exc
        targets = self._check_targets(definition, plan.targets)
        normalised = replace(plan, params=params.model_dump(mode="json"), targets=targets)
        check = runbook.part(StepKind.PLAN_CHECK)
        if check is not None:
            problems: list[str] = check.fn(normalised, params, self.settings)
            if problems:
                raise InvalidPlan(f"{plan.runbook}: " + "; ".join(problems))
        return normalised

    @staticmethod
    def _check_targets(definition: RunbookDefinition, targets: Any) -> tuple[Target, ...]:
        if not isinstance(targets, tuple | list) or not all(isinstance(t, Target) for t in targets):
            raise InvalidPlan(f"{definition.name}: targets must be a sequence of Target")
        found = tuple(t for t in targets if t.kind is not TargetKind.NONE)
        if definition.target_kind is TargetKind.NONE:
            if found:
                raise InvalidPlan(f"{definition.name} takes no targets, got {', '.join(t.key() for t in found)}")
            return ()
        wrong = [t.key() for t in targets if t.kind is not definition.target_kind]
        if wrong:
            raise InvalidPlan(f"{definition.name} acts on {definition.target_kind} targets, got {', '.join(wrong)}")
        if not 1 <= len(found) <= definition.max_targets:
            raise InvalidPlan(
                f"{definition.name} takes {'one' if definition.max_targets == 1 else f'1 to {definition.max_targets}'}"
                f" {definition.target_kind} target(s), got {len(found)}"
            )
        if len({t.key() for t in found}) != len(found):
            raise InvalidPlan(f"{definition.name}: the same target is named twice")
        return found

    def _prepared(self, plan: Plan, ctx: RunbookContext) -> tuple[Runbook[Any], Plan, BaseModel, RunbookContext]:
        """The runbook, the validated plan, its parameters, and the context under the catalogue's settings."""
        checked = self.validate(plan)
        runbook = self._runbook(checked.runbook)
        params = runbook.definition.params_model.model_validate(checked.params)
        if ctx.settings is not self.settings:
            ctx = replace(ctx, settings=self.settings)
        return runbook, checked, params, ctx

    # ------------------------------------------------------------------ judging

    def risk_for(self, plan: Plan, ctx: RunbookContext) -> Risk:
        """The base risk, raised (never lowered) by what the runbook finds in the cluster."""
        runbook, checked, params, ctx = self._prepared(plan, ctx)
        base = runbook.definition.risk
        judge = runbook.part(StepKind.RISK)
        if judge is None:
            return base
        found: Risk = judge.fn(checked, params, ctx)
        return base.at_least(found)

    def preconditions(self, plan: Plan, ctx: RunbookContext) -> list[str]:
        """Problems that stop the plan now, read from the live cluster; [] = it may proceed."""
        runbook, checked, params, ctx = self._prepared(plan, ctx)
        return self._preconditions(runbook, checked, params, ctx)

    @staticmethod
    def _preconditions(runbook: Runbook[Any], plan: Plan, params: BaseModel, ctx: RunbookContext) -> list[str]:
        part = runbook.part(StepKind.PRECONDITION)
        assert part is not None
        try:
            problems: list[str] = part.fn(plan, params, ctx)
        except Exception as exc:  # a cluster that cannot be read is a blocker, not a crash
            log.warning("preconditions of %s failed: %s", plan.runbook, exc)
            return [f"could not check preconditions: {exc}"]
        return problems

    def dry_run(self, plan: Plan, ctx: RunbookContext) -> Diff:
        """What executing would change and cost; changes nothing. Precondition problems become blockers."""
        runbook, checked, params, ctx = self._prepared(plan, ctx)
        blockers = self._preconditions(runbook, checked, params, ctx)
        part = runbook.part(StepKind.DRY_RUN)
        assert part is not None
        try:
            diff: Diff = part.fn(checked, params, ctx)
        except Exception as exc:
            log.warning("dry run of %s failed: %s", plan.runbook, exc)
            diff = Diff(blockers=[f"dry run failed: {exc}"])
        diff.blockers = blockers + [b for b in diff.blockers if b not in blockers]
        return diff

    # ------------------------------------------------------------------ acting

    def execute(self, plan: Plan, ctx: RunbookContext) -> StepResult:
        """Check the preconditions again, then run the steps in order, reporting each through ctx.on_step;
        stop at the first failure. Never raises for a cluster failure."""
        runbook, checked, params, ctx = self._prepared(plan, ctx)
        problems = self._preconditions(runbook, checked, params, ctx)
        pre = StepResult(not problems, "; ".join(problems) or "preconditions hold", {"problems": problems})
        ctx.on_step("preconditions", pre)
        if not pre.ok:
            return StepResult(False, f"{checked.runbook} not started: {pre.detail}", {"failed_step": "preconditions"})
        data: dict[str, Any] = {"steps": []}
        for step in runbook.steps:
            result = self._run(step, checked, params, ctx)
            ctx.on_step(step.name, result)
            data["steps"].append(step.name)
            data.update(result.data)
            if not result.ok:
                data["failed_step"] = step.name
                return StepResult(False, f"{checked.runbook} stopped at {step.name}: {result.detail}", data)
        return StepResult(True, f"{checked.runbook} done: {result.detail}", data)

    @staticmethod
    def _run(step: RegisteredStep, plan: Plan, params: BaseModel, ctx: RunbookContext) -> StepResult:
        try:
            result: StepResult = step.fn(plan, params, ctx)
        except (ClusterError, GpuopsError) as exc:  # the cluster refused or failed: a result, not a crash
            log.warning("step %s of %s failed: %s", step.name, plan.runbook, exc)
            return StepResult(False, f"{type(exc).__name__}: {exc}", {"error": str(exc)})
        except Exception as exc:  # the executor expects a result it can audit, never a traceback
            log.exception("step %s of %s raised unexpectedly", step.name, plan.runbook)
            return StepResult(False, f"{type(exc).__name__}: {exc}", {"error": str(exc)})
        return result

    def verify(self, plan: Plan, ctx: RunbookContext) -> StepResult:
        """Check the expected effect, re-checking until the runbook's verify deadline passes."""
        runbook, checked, params, ctx = self._prepared(plan, ctx)
        part = runbook.part(StepKind.VERIFY)
        assert part is not None
        deadline = self.settings.verify_deadline_s or runbook.definition.verify_deadline_s
        last: list[StepResult] = []

        def check() -> StepResult | None:
            result = self._run(part, checked, params, ctx)
            last.append(result)
            return result if result.ok else None

        found = ctx.poll(deadline, check)
        result = found or StepResult(
            False, f"{last[-1].detail} (not met within {deadline:g}s)", {**last[-1].data, "deadline_s": deadline}
        )
        ctx.on_step("verify", result)
        return result

    def rollback(self, plan: Plan, ctx: RunbookContext) -> StepResult | None:
        """Undo what execute did, where the runbook has a rollback; None when it has none."""
        runbook, checked, params, ctx = self._prepared(plan, ctx)
        part = runbook.part(StepKind.ROLLBACK)
        if part is None:
            return None
        result = self._run(part, checked, params, ctx)
        ctx.on_step("rollback", result)
        return result
