"""A runbook = a declarative definition (pydantic-validated data) + typed step functions registered on it.

Every registered function takes `(plan, params, ctx)`: the validated plan, its parameters as the
definition's `params_model`, and the RunbookContext (a plan check takes the RunbookSettings instead of a
context: it runs before any cluster is at hand). The registry checks each signature when it is
registered, so a mistyped step fails at import, not in the middle of an incident.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

from runbooks.context import RunbookContext
from runbooks.errors import StepSignatureError
from runbooks.model import Diff, Plan, Risk, StepResult, TargetKind
from runbooks.settings import RunbookSettings

P = TypeVar("P", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RunbookDefinition(BaseModel):
    """What a runbook is, as data: the catalogue, the policy and the agent read only this."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME.pattern)
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    risk: Risk
    target_kind: TargetKind
    max_targets: int = Field(default=1, ge=0, description="how many targets a plan may name (0 for NONE)")
    params_model: type[BaseModel]
    disruptive: bool
    takes: Literal["node", "gpu"] = Field(
        default="node", description="what a disruptive runbook takes from service: its node, or only its GPU (the "
                                    "node's other GPUs keep serving; its cordon lasts while the runbook runs)")
    auto_approvable: bool
    expected_effect: str = Field(min_length=1)
    verify_deadline_s: float = Field(gt=0)
    has_rollback: bool

    @model_validator(mode="after")
    def _consistent(self) -> RunbookDefinition:
        if self.auto_approvable and self.risk is not Risk.LOW:
            raise ValueError(f"runbook {self.name}: only a low-risk runbook may be auto-approvable")
        if (self.target_kind is TargetKind.NONE) != (self.max_targets == 0):
            raise ValueError(f"runbook {self.name}: max_targets is 0 exactly when target_kind is none")
        if self.takes == "gpu" and self.target_kind is not TargetKind.GPU:
            raise ValueError(f"runbook {self.name}: only a runbook targeting a GPU takes only its GPU")
        return self

    @field_serializer("params_model")
    def _params_schema(self, model: type[BaseModel]) -> dict[str, Any]:
        """Serialised, the parameter model is its JSON schema (for the dashboard and the agent)."""
        return model.model_json_schema()

    def tool_schema(self) -> dict[str, Any]:
        """The parameters' JSON schema, as an LLM tool definition wants it."""
        return self.params_model.model_json_schema()


class StepKind(StrEnum):
    PLAN_CHECK = "plan_check"
    RISK = "risk"
    PRECONDITION = "precondition"
    DRY_RUN = "dry_run"
    STEP = "step"
    VERIFY = "verify"
    ROLLBACK = "rollback"


_RETURNS: dict[StepKind, Any] = {
    StepKind.PLAN_CHECK: list[str],
    StepKind.RISK: Risk,
    StepKind.PRECONDITION: list[str],
    StepKind.DRY_RUN: Diff,
    StepKind.STEP: StepResult,
    StepKind.VERIFY: StepResult,
    StepKind.ROLLBACK: StepResult,
}


def check_signature(fn: Callable[..., Any], kind: StepKind, params_model: type[BaseModel]) -> None:
    """Refuse a function whose signature is not `(plan: Plan, params: <params_model>, ctx) -> <kind's result>`."""
    where = f"{kind} {getattr(fn, '__qualname__', fn)!r}"
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError) as exc:
        raise StepSignatureError(f"{where}: cannot read its signature ({exc})") from exc
    params = list(signature.parameters.values())
    if len(params) != 3 or any(
        p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.default is not p.empty for p in params
    ):
        raise StepSignatureError(f"{where}: takes exactly three positional parameters (plan, params, ctx)")
    third = RunbookSettings if kind is StepKind.PLAN_CHECK else RunbookContext
    expected = (Plan, params_model, third)
    for param, want in zip(params, expected, strict=True):
        got = hints.get(param.name)
        if got is None:
            raise StepSignatureError(f"{where}: parameter {param.name!r} needs a type annotation ({want.__name__})")
        if got is not want and not (
            want is params_model and isinstance(got, type) and issubclass(params_model, got) and got is not BaseModel
        ):
            raise StepSignatureError(
                f"{where}: parameter {param.name!r} is annotated {got!r}, expected {want.__name__}"
            )
    if hints.get("return") != _RETURNS[kind]:
        raise StepSignatureError(f"{where}: must return {_RETURNS[kind]!r}, is annotated {hints.get('return')!r}")


@dataclass(frozen=True)
class RegisteredStep:
    name: str
    kind: StepKind
    fn: Callable[..., Any]


class Runbook(Generic[P]):
    """A definition and the functions registered on it. Decorators register and check each function."""

    def __init__(self, definition: RunbookDefinition) -> None:
        self.definition = definition
        self._steps: list[RegisteredStep] = []
        self._single: dict[StepKind, RegisteredStep] = {}

    @property
    def name(self) -> str:
        return self.definition.name

    def register(self, kind: StepKind, fn: F, name: str | None = None) -> F:
        """Register `fn` as this runbook's `kind`; StepSignatureError if its signature does not fit."""
        check_signature(fn, kind, self.definition.params_model)
        entry = RegisteredStep(name or fn.__name__.lstrip("_"), kind, fn)
        if kind is StepKind.STEP:
            if any(s.name == entry.name for s in self._steps):
                raise StepSignatureError(f"runbook {self.name}: a step named {entry.name!r} is already registered")
            self._steps.append(entry)
        else:
            if kind in self._single:
                raise StepSignatureError(f"runbook {self.name}: a {kind} is already registered")
            self._single[kind] = entry
        return fn

    def step(self, fn: F) -> F:
        return self.register(StepKind.STEP, fn)

    def plan_check(self, fn: F) -> F:
        return self.register(StepKind.PLAN_CHECK, fn)

    def risk(self, fn: F) -> F:
        return self.register(StepKind.RISK, fn)

    def precondition(self, fn: F) -> F:
        return self.register(StepKind.PRECONDITION, fn)

    def dry_run(self, fn: F) -> F:
        return self.register(StepKind.DRY_RUN, fn)

    def verify(self, fn: F) -> F:
        return self.register(StepKind.VERIFY, fn)

    def rollback(self, fn: F) -> F:
        return self.register(StepKind.ROLLBACK, fn)

    @property
    def steps(self) -> tuple[RegisteredStep, ...]:
        return tuple(self._steps)

    def part(self, kind: StepKind) -> RegisteredStep | None:
        return self._single.get(kind)
