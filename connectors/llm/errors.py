"""The LLM port's exception tree: adapters translate every vendor error into one of these at the boundary."""

from __future__ import annotations

from connectors.llm.port import TokenUsage


class LLMError(Exception):
    """The model gave no usable answer, for a reason a retry will not fix (bad key, unknown model, a request
    the server refuses). `status_code` is the HTTP status when the server sent one; `usage` the tokens billed
    for an answer that was unusable all the same."""

    def __init__(self, message: str, *, status_code: int | None = None, usage: TokenUsage | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.usage = usage


class LLMUnavailable(LLMError):
    """The model could not be reached, failed (5xx), was busy (408, 409) or rate-limited us (429), after the
    adapter's own retries: a later call may succeed."""


class LLMTimeout(LLMUnavailable):
    """The model did not answer within the timeout, after the adapter's own retries."""


class LLMBadResponse(LLMError):
    """The server answered, but not with a Chat Completions answer the planner can use (not JSON, no choices,
    a tool call of a kind other than a function)."""
