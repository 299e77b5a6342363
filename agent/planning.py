"""The one interface both planners implement, and what they are given and give back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.actions import PlannedAction, RunbookSpec
from agent.tools import ToolResult


@dataclass
class PlanRequest:
    """Everything a planner may use. `check` is the code validation every candidate must pass
    (runbook exists, parameters validate, targets inside the incident); `run_tool` runs an investigation
    tool (bounded by the tool budget) for a planner that wants more evidence; `blockers` says what stops a
    candidate on the cluster now (its runbook's preconditions, read live: a planner choosing a size asks it)."""

    incident: dict[str, Any]
    fault: str
    evidence: list[ToolResult]
    specs: list[RunbookSpec]
    check: Callable[[PlannedAction], list[str]]
    run_tool: Callable[[str, dict[str, Any]], ToolResult]
    llm_calls_so_far: int = 0
    blockers: Callable[[PlannedAction], list[str]] = field(default=lambda action: [])


@dataclass
class Usage:
    """LLM use of one planning run."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, Any]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "total_tokens": self.total_tokens,
                "cost_usd": round(self.cost_usd, 6)}


@dataclass
class PlanResult:
    """A planner's answer. `ok=False` means the planner could not produce a valid plan (the graph falls back
    to the rules planner); an empty `actions` with `escalate` set means a human should decide."""

    planner: str
    ok: bool
    actions: list[PlannedAction] = field(default_factory=list)
    rationale: str = ""
    escalate: str | None = None
    notes: list[str] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


class Planner(Protocol):
    """Maps an investigated incident to an ordered list of actions with a rationale citing the evidence."""

    name: str

    def plan(self, request: PlanRequest) -> PlanResult:
        ...
