"""The LLM planner: Chat Completions with one tool per runbook (generated from the runbook schemas), through
the LLM port (`connectors.llm.ChatModel`): OpenAI or any compatible server (vLLM, Ollama, llama.cpp), named by
OPENAI_BASE_URL and GPUOPS_LLM_MODEL.

Its answer is only a candidate: each action is validated in code (runbook exists, parameters validate,
targets inside the incident). An invalid answer gets one corrective retry; a second invalid answer, a refusal,
a timeout, a transport failure, an answer that is not Chat Completions or the per-incident call cap all end in
`ok=False`, and the graph falls back to the rules planner. Transient failures (connection, timeout,
408/409/429/5xx) are retried by the adapter with backoff (`max_retries`); one planning call counts once however
many transport retries it needed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

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
from connectors.llm import ChatModel, ChatReply, LLMError, LLMUnavailable, TokenUsage, ToolCall, connect

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


class Secret(Protocol):
    """A secret read only where it is used (pydantic's SecretStr)."""

    def get_secret_value(self) -> str: ...


class LLMSettings(Protocol):
    """What the planner reads of the service's settings (`gpuops.config.Settings` has it)."""

    @property
    def llm_configured(self) -> bool: ...

    @property
    def llm_model(self) -> str | None: ...

    @property
    def openai_base_url(self) -> str | None: ...

    @property
    def openai_api_key(self) -> Secret | None: ...


class _Rejected(Exception):
    """The model's answer failed validation; the message lists why."""


class LLMPlanner:
    """Plans with a Chat Completions model; see the module docstring for what happens when it fails."""

    name = "llm"

    def __init__(self, chat: ChatModel, limits: LLMLimits | None = None) -> None:
        self.chat, self.limits = chat, limits or LLMLimits()

    @classmethod
    def from_settings(cls, settings: LLMSettings, limits: LLMLimits | None = None) -> LLMPlanner | None:
        """The planner for the configured model, or None when no LLM is configured (the rules planner plans).
        The model's timeout and transport retries are the limits' `timeout_s` and `max_retries`."""
        if not settings.llm_configured or settings.llm_model is None:
            return None
        limits = limits or LLMLimits()
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        chat = connect(model=settings.llm_model, base_url=settings.openai_base_url, api_key=key,
                       timeout_s=limits.timeout_s, max_retries=limits.max_retries)
        return cls(chat, limits)

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
            message = self._call(messages, tools, result)
            if message is None:
                return result
            if message.refusal:
                result.notes.append(f"LLM refused: {message.refusal[:200]}")
                return result
            messages.append(message.as_message())
            step = self._answer(message, messages, request, result, corrected)
            if step in ("done", "failed"):
                return result
            corrected = corrected or step == "corrected"
        result.notes.append(f"LLM call cap of {self.limits.max_calls} per incident reached")
        return result

    def _answer(self, message: ChatReply, messages: list[dict[str, Any]], request: PlanRequest, result: PlanResult,
                corrected: bool) -> str:
        """Judge one answer: `done` (a valid plan or an escalation), `more` (it asked for evidence),
        `corrected` (invalid, told why, asked again) or `failed` (invalid after the corrective retry)."""
        calls = list(message.tool_calls)
        if not calls:
            result.rejections.append({"problems": "answer without a tool call",
                                      "answer": (message.content or "")[:300]})
            if corrected:
                result.notes.append("LLM answered without a tool call twice")
                return "failed"
            messages.append({"role": "user", "content": NO_TOOL_CALL})
            return "corrected"
        if all(c.name.startswith("investigate_") for c in calls):
            for call in calls:
                found = request.run_tool(call.name.removeprefix("investigate_"), _args(call))
                messages.append({"role": "tool", "tool_call_id": call.id,
                                 "content": found.fenced(self.limits.tool_output_chars)})
            return "more"
        try:
            actions, escalate = self._actions(calls, {s.name for s in request.specs}, request)
        except _Rejected as exc:
            answer = [f"{c.name}({c.arguments[:300]})" for c in calls]
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

    def _call(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
              result: PlanResult) -> ChatReply | None:
        """One call to the model, its tokens counted; None (and a note) when it gave no usable answer."""
        result.usage.calls += 1
        try:
            reply = self.chat.complete(messages, tools=tools, max_tokens=self.limits.max_tokens, temperature=0)
        except LLMUnavailable as exc:
            result.notes.append(f"LLM unavailable: {str(exc)[:300]}")
            self._count(result.usage, exc.usage)
            return None
        except LLMError as exc:
            result.notes.append(f"LLM error: {type(exc).__name__}: {str(exc)[:300]}")
            self._count(result.usage, exc.usage)
            return None
        self._count(result.usage, reply.usage)
        return reply

    def _count(self, usage: Usage, tokens: TokenUsage | None) -> None:
        if tokens is None:
            return
        usage.prompt_tokens += tokens.prompt_tokens
        usage.completion_tokens += tokens.completion_tokens
        usage.cost_usd += (tokens.prompt_tokens * self.limits.prompt_usd_per_mtok
                           + tokens.completion_tokens * self.limits.completion_usd_per_mtok) / 1e6

    @staticmethod
    def _actions(calls: list[ToolCall], specs: set[str],
                 request: PlanRequest) -> tuple[list[PlannedAction], str | None]:
        actions: list[PlannedAction] = []
        problems: list[str] = []
        for call in calls:
            name = call.name
            if name == "escalate_to_human":
                return [], f"the LLM planner escalates: {str(_args(call).get('reason', ''))[:300]}"
            if name.startswith("investigate_"):
                problems.append(f"{name}: investigation tools cannot be mixed with runbook calls")
                continue
            if name not in specs:
                problems.append(f"{name}: no such runbook")
                continue
            try:
                args = json.loads(call.arguments or "{}")
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
        return f"LLM planner ({self.chat.name}) chose {chosen}: {said} Evidence gathered: {cited or 'none'}." + (
            f" {escalate}" if escalate else "")


def _args(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


__all__ = ["LLMLimits", "LLMPlanner", "LLMSettings", "compact"]
