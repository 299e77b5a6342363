"""The LLM planner: OpenAI's Chat Completions with one tool per runbook (generated from the runbook schemas),
working with OpenAI and any compatible server (vLLM, Ollama, llama.cpp) through OPENAI_BASE_URL and
GPUOPS_LLM_MODEL.

Its answer is only a candidate: each action is validated in code (runbook exists, parameters validate,
targets inside the incident). An invalid answer gets one corrective retry; a second invalid answer, a refusal,
a timeout, a transport failure or the per-incident call cap all end in `ok=False`, and the graph falls back to
the rules planner. Transient HTTP errors (connection, timeout, 408/409/429/5xx) are retried by the SDK itself
with backoff (`max_retries`); one planning call counts once however many transport retries it needed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, cast

import openai

from agent.actions import PlannedAction
from agent.planning import PlanRequest, PlanResult, Usage
from agent.prompts import (
    CORRECTION,
    ESCALATE_TOOL,
    NO_TOOL_CALL,
    SYSTEM,
    compact,
    incident_message,
    investigation_tool,
    runbook_tool,
)
from agent.tools import TOOLS
from gpuops.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMLimits:
    max_calls: int = 4                  # Chat Completions requests per incident, across planning runs
    timeout_s: float = 30.0             # per request
    max_retries: int = 2                # transport retries per request (the SDK's backoff)
    max_tokens: int = 800               # completion tokens per request
    tool_output_chars: int = 2000
    prompt_usd_per_mtok: float = 0.0    # prices for the cost recorded per incident
    completion_usd_per_mtok: float = 0.0


class _Rejected(Exception):
    """The model's answer failed validation; the message lists why."""


class LLMPlanner:
    """Plans with a Chat Completions model; see the module docstring for what happens when it fails."""

    name = "llm"

    def __init__(self, client: openai.OpenAI, model: str, limits: LLMLimits | None = None) -> None:
        self.client, self.model, self.limits = client, model, limits or LLMLimits()

    @classmethod
    def from_settings(cls, settings: Settings, limits: LLMLimits | None = None) -> LLMPlanner | None:
        """The planner for the configured model, or None when no LLM is configured (the rules planner plans)."""
        if not settings.llm_configured or settings.llm_model is None:
            return None
        limits = limits or LLMLimits()
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
        client = openai.OpenAI(api_key=key, base_url=settings.openai_base_url, timeout=limits.timeout_s,
                               max_retries=limits.max_retries)
        return cls(client, settings.llm_model, limits)

    def plan(self, request: PlanRequest) -> PlanResult:
        result = PlanResult(self.name, ok=False)
        budget = self.limits.max_calls - request.llm_calls_so_far
        tools = [runbook_tool(s) for s in request.specs]
        tools += [investigation_tool(n, d) for n, (_, d) in TOOLS.items()] + [ESCALATE_TOOL]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": incident_message(request.incident, request.fault, request.evidence,
                                                         self.limits.tool_output_chars)},
        ]
        corrected = False
        while result.usage.calls < budget:
            message = self._call(messages, tools, result.usage, result)
            if message is None:
                return result
            if getattr(message, "refusal", None):
                result.notes.append(f"LLM refused: {str(message.refusal)[:200]}")
                return result
            messages.append(_assistant(message))
            step = self._answer(message, messages, request, result, corrected)
            if step in ("done", "failed"):
                return result
            corrected = corrected or step == "corrected"
        result.notes.append(f"LLM call cap of {self.limits.max_calls} per incident reached")
        return result

    def _answer(self, message: Any, messages: list[dict[str, Any]], request: PlanRequest, result: PlanResult,
                corrected: bool) -> str:
        """Judge one answer: `done` (a valid plan or an escalation), `more` (it asked for evidence),
        `corrected` (invalid, told why, asked again) or `failed` (invalid after the corrective retry)."""
        calls = list(message.tool_calls or [])
        if not calls:
            result.rejections.append({"problems": "answer without a tool call",
                                      "answer": (message.content or "")[:300]})
            if corrected:
                result.notes.append("LLM answered without a tool call twice")
                return "failed"
            messages.append({"role": "user", "content": NO_TOOL_CALL})
            return "corrected"
        if all(c.function.name.startswith("investigate_") for c in calls):
            for call in calls:
                found = request.run_tool(call.function.name.removeprefix("investigate_"), _args(call))
                messages.append({"role": "tool", "tool_call_id": call.id,
                                 "content": found.fenced(self.limits.tool_output_chars)})
            return "more"
        try:
            actions, escalate = self._actions(calls, {s.name for s in request.specs}, request)
        except _Rejected as exc:
            answer = [f"{c.function.name}({(c.function.arguments or '')[:300]})" for c in calls]
            result.rejections.append({"problems": str(exc)[:1000], "answer": answer})
            if corrected:
                result.notes.append(f"LLM answer invalid after a corrective retry: {str(exc)[:300]}")
                return "failed"
            for call in calls:
                messages.append({"role": "tool", "tool_call_id": call.id,
                                 "content": CORRECTION.format(problems=str(exc)[:1000])})
            return "corrected"
        result.ok, result.actions, result.escalate = True, actions, escalate
        result.rationale = self._rationale(message.content, actions, escalate, request)
        return "done"

    def _call(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], usage: Usage,
              result: PlanResult) -> Any:
        usage.calls += 1
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=cast(Any, messages), tools=cast(Any, tools), tool_choice="auto",
                temperature=0, max_tokens=self.limits.max_tokens,
            )
        except openai.APITimeoutError:
            result.notes.append(f"LLM timed out after {self.limits.timeout_s:g}s ({self.limits.max_retries} retries)")
            return None
        except openai.APIConnectionError as exc:
            result.notes.append(f"LLM unreachable: {exc}")
            return None
        except openai.APIStatusError as exc:
            result.notes.append(f"LLM answered HTTP {exc.status_code}: {str(exc.message)[:200]}")
            return None
        except openai.OpenAIError as exc:
            result.notes.append(f"LLM error: {type(exc).__name__}: {str(exc)[:200]}")
            return None
        if response.usage is not None:
            usage.prompt_tokens += response.usage.prompt_tokens
            usage.completion_tokens += response.usage.completion_tokens
            usage.cost_usd += (response.usage.prompt_tokens * self.limits.prompt_usd_per_mtok
                               + response.usage.completion_tokens * self.limits.completion_usd_per_mtok) / 1e6
        if not response.choices:
            result.notes.append("LLM answered with no choices")
            return None
        return response.choices[0].message

    @staticmethod
    def _actions(calls: list[Any], specs: set[str],
                 request: PlanRequest) -> tuple[list[PlannedAction], str | None]:
        actions: list[PlannedAction] = []
        problems: list[str] = []
        for call in calls:
            name = call.function.name
            if name == "escalate_to_human":
                return [], f"the LLM planner escalates: {str(_args(call).get('reason', ''))[:300]}"
            if name.startswith("investigate_"):
                problems.append(f"{name}: investigation tools cannot be mixed with runbook calls")
                continue
            if name not in specs:
                problems.append(f"{name}: no such runbook")
                continue
            try:
                args = json.loads(call.function.arguments or "{}")
            except json.JSONDecodeError as exc:
                problems.append(f"{name}: arguments are not valid JSON ({exc.msg})")
                continue
            targets, params = (args.get("targets"), args.get("params", {})) if isinstance(args, dict) else (None, None)
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                problems.append(f"{name}: targets must be a list of target keys")
                continue
            if not isinstance(params, dict):
                problems.append(f"{name}: params must be an object")
                continue
            action = PlannedAction(name, params, tuple(targets) or ("none",))
            found = request.check(action)
            if found:
                problems.append(f"{name} {list(action.targets)}: {'; '.join(found)}")
                continue
            actions.append(action)
        if problems:
            raise _Rejected("; ".join(problems))
        if not actions:
            raise _Rejected("no runbook was chosen")
        return actions, None

    def _rationale(self, content: str | None, actions: list[PlannedAction], escalate: str | None,
                   request: PlanRequest) -> str:
        cited = "; ".join(f"{e.tool}: {e.summary}" for e in request.evidence if e.status == "ok")[:800]
        chosen = " → ".join(a.runbook for a in actions) or "escalate"
        said = (content or "").strip()[:1000] or "no explanation given"
        return f"LLM planner ({self.model}) chose {chosen}: {said} Evidence gathered: {cited or 'none'}." + (
            f" {escalate}" if escalate else "")


def _assistant(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
    if message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.function.name, "arguments": c.function.arguments}}
                             for c in message.tool_calls]
    return out


def _args(call: Any) -> dict[str, Any]:
    try:
        value = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


__all__ = ["LLMLimits", "LLMPlanner", "compact"]
