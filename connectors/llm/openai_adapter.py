"""The real adapter: the `openai` SDK against any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM,
Ollama, llama.cpp). Building it contacts nothing.

The SDK sends, authenticates and retries transient failures (connection, timeout, 408/409/429/5xx) with
backoff, `max_retries` times; whatever still fails becomes an `LLMError` here. The answer's JSON is read here
too, and checked: the SDK builds its response objects without validation, so a server answering nonsense would
otherwise surface as an AttributeError deep in the planner.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import httpx
import openai

from connectors.llm.errors import LLMBadResponse, LLMError, LLMTimeout, LLMUnavailable
from connectors.llm.port import ChatModel, ChatReply, TokenUsage, ToolCall

TRANSIENT_STATUS = frozenset({408, 409, 429})
_ADVICE = {401: "check the API key", 403: "check the API key and its access to the model",
           404: "check the model name and the base URL (it usually ends in /v1)"}


class OpenAIChatModel:
    """ChatModel over an OpenAI-compatible endpoint. Without `api_key` it sends a placeholder (local servers
    check none); `http_client` replaces the SDK's own client (tests pass one over `httpx.MockTransport`)."""

    def __init__(self, *, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 30.0, max_retries: int = 2, http_client: httpx.Client | None = None) -> None:
        self._model, self.timeout_s, self.max_retries = model, timeout_s, max_retries
        # openai 3 is typed for httpx2's client but takes an httpx.Client as it is.
        self._client = openai.OpenAI(api_key=api_key or "not-needed", base_url=base_url, timeout=timeout_s,
                                     max_retries=max_retries, http_client=cast(Any, http_client))

    @property
    def name(self) -> str:
        return self._model

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    def complete(self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] = (),
                 max_tokens: int | None = None, temperature: float = 0.0) -> ChatReply:
        options: dict[str, Any] = {"tools": [dict(t) for t in tools], "tool_choice": "auto"} if tools else {}
        with self._translated():
            raw = self._client.chat.completions.with_raw_response.create(
                model=self._model, messages=cast(Any, [dict(m) for m in messages]), temperature=temperature,
                max_tokens=max_tokens, **options)
        return parse_reply(raw.text)

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        where = f"the model {self._model!r} at {self.base_url}"
        try:
            yield
        except openai.APITimeoutError as exc:
            raise LLMTimeout(f"{where} timed out after {self.timeout_s:g}s ({self.max_retries} retries); check "
                             "the server's load, or give it a longer timeout") from exc
        except openai.APIConnectionError as exc:
            raise LLMUnavailable(f"{where} is unreachable ({exc}, {self.max_retries} retries); check the base "
                                 "URL and that the server runs") from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            said = f"{where} answered HTTP {status}: {str(exc.message)[:200]}"
            if status in TRANSIENT_STATUS or status >= 500:
                raise LLMUnavailable(f"{said} ({self.max_retries} retries); try again later",
                                     status_code=status) from exc
            advice = _ADVICE.get(status, "the server refused the request (model name, tool schemas, max tokens)")
            raise LLMError(f"{said}; {advice}", status_code=status) from exc
        except openai.OpenAIError as exc:
            raise LLMError(f"{where}: {type(exc).__name__}: {str(exc)[:200]}") from exc


def connect(*, model: str, base_url: str | None, api_key: str | None, timeout_s: float,
            max_retries: int) -> ChatModel:
    """The model behind an OpenAI-compatible endpoint, as the port: what callers outside connectors build."""
    return OpenAIChatModel(model=model, base_url=base_url, api_key=api_key, timeout_s=timeout_s,
                           max_retries=max_retries)


def parse_reply(body: str | bytes) -> ChatReply:
    """A Chat Completions answer's first choice, checked; `LLMBadResponse` saying what is wrong otherwise."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise LLMBadResponse(f"the answer is not JSON: {body[:120]!r}") from exc
    if not isinstance(data, dict):
        raise LLMBadResponse(f"the answer is not a JSON object: {str(data)[:120]}")
    usage = _usage(data.get("usage"))
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise LLMBadResponse(f"the answer has no choices: {json.dumps(data)[:200]}", usage=usage)
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message")
    if not isinstance(message, dict):
        raise LLMBadResponse(f"the answer's first choice has no message: {json.dumps(choices[0])[:200]}",
                             usage=usage)
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise LLMBadResponse(f"tool_calls is not a list: {json.dumps(raw_calls)[:200]}", usage=usage)
    finish = choice.get("finish_reason")
    return ChatReply(content=_text(message, "content", usage), refusal=_text(message, "refusal", usage),
                     tool_calls=tuple(_tool_call(i, c, usage) for i, c in enumerate(raw_calls)),
                     usage=usage, finish_reason=finish if isinstance(finish, str) else None)


def _usage(value: object) -> TokenUsage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    return TokenUsage(prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0)


def _text(message: dict[str, Any], key: str, usage: TokenUsage | None) -> str | None:
    value = message.get(key)
    if value is None or isinstance(value, str):
        return value
    raise LLMBadResponse(f"the message's {key} is not text: {json.dumps(value)[:200]}", usage=usage)


def _tool_call(index: int, call: object, usage: TokenUsage | None) -> ToolCall:
    """One function call; servers that omit the id get a stable one (the conversation needs it)."""
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        kind = call.get("type") if isinstance(call, dict) else type(call).__name__
        raise LLMBadResponse(f"a tool call of type {kind!r}: only function calls are understood", usage=usage)
    function = call.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(function, dict) or not isinstance(name, str) or not name:
        raise LLMBadResponse(f"a function call without a name: {json.dumps(call)[:200]}", usage=usage)
    arguments = function.get("arguments")
    if isinstance(arguments, dict):  # some servers send the object itself rather than its JSON text
        arguments = json.dumps(arguments)
    if arguments is not None and not isinstance(arguments, str):
        raise LLMBadResponse(f"{name}: arguments are neither JSON text nor an object", usage=usage)
    call_id = call.get("id")
    return ToolCall(call_id if isinstance(call_id, str) and call_id else f"call_{index}", name, arguments or "")
