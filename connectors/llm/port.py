"""ChatModel: what the planner asks of a language model, one Chat Completions call at a time.

Messages and tool schemas are in the Chat Completions wire format (they are data the planner builds and the
server reads; nothing in between needs to understand them); the answer comes back typed. Every failure is a
`connectors.llm.errors.LLMError`; `LLMUnavailable` means a later call may succeed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for; `arguments` is the JSON text as the model wrote it (it may be
    invalid: judging it is the caller's business)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one call was billed for."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatReply:
    """The model's answer to one call: text, function calls, or a refusal, and the tokens it cost
    (`usage` is None when the server did not say)."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None
    usage: TokenUsage | None = None
    finish_reason: str | None = None

    def as_message(self) -> dict[str, Any]:
        """The answer as the assistant message that continues the conversation (wire format)."""
        out: dict[str, Any] = {"role": "assistant", "content": self.content or ""}
        if self.tool_calls:
            out["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}}
                                 for c in self.tool_calls]
        return out


@runtime_checkable
class ChatModel(Protocol):
    """A chat model behind an OpenAI-compatible Chat Completions API (or anything answering like one)."""

    @property
    def name(self) -> str:
        """The model's name, as requests name it."""
        ...

    def complete(self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] = (),
                 max_tokens: int | None = None, temperature: float = 0.0) -> ChatReply:
        """One Chat Completions call; with `tools`, the model may answer with calls to them (`tool_choice`
        auto). Raises `LLMError` (`LLMUnavailable` when a later call may succeed)."""
        ...
