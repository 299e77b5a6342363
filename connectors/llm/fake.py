"""A scripted chat model in memory: an `httpx.MockTransport` handler that speaks the Chat Completions wire
format, so tests (and the evaluation's misbehaving model) run the real adapter and the real planner with no
server. It answers from a script (a list of canned replies, or a function of the request's body) and records
every request body.

Usage is estimated at four characters per token of what was sent and answered, so it grows with what the
planner really sends. A reply with `timeout` raises httpx's ReadTimeout, as a transport whose server never
answers would; error statuses carry `retry-after-ms`, so the SDK's retries do not wait out its backoff.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from connectors.llm.openai_adapter import OpenAIChatModel

BASE_URL = "http://scripted-llm.invalid/v1"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: function calls, text or a refusal; or an HTTP error status, a timeout, or a raw
    body sent as it is (a server answering nonsense)."""

    tool_calls: Sequence[tuple[str, str]] = ()   # (name, raw JSON arguments)
    content: str | None = None
    refusal: str | None = None
    status: int = 200
    timeout: bool = False
    raw_tool_calls: list[dict[str, Any]] | None = None   # sent as they are (shapes the planner does not expect)
    body: bytes | None = None


def call(name: str, **arguments: Any) -> tuple[str, str]:
    """A function call for `Reply.tool_calls`, its arguments as JSON text."""
    return name, json.dumps(arguments)


Script = Sequence[Reply] | Callable[[dict[str, Any]], Reply]


class ScriptedChat:
    """The scripted server: call it with an httpx.Request (it is a MockTransport handler); `requests` holds
    every request body received. A list script answers in order, then with HTTP 400 once it runs out."""

    def __init__(self, script: Script) -> None:
        self._answer = script if callable(script) else None
        self._queue: list[Reply] = [] if callable(script) else list(script)
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or not request.url.path.rstrip("/").endswith("/chat/completions"):
            return _error(404, f"no such endpoint: {request.method} {request.url.path}")
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            return _error(400, "the request body is not JSON")
        self.requests.append(body if isinstance(body, dict) else {})
        reply = self._next(self.requests[-1])
        if reply is None:
            return _error(400, "the script has no more answers")
        if reply.timeout:
            raise httpx.ReadTimeout("the scripted model never answers", request=request)
        if reply.status != 200:
            return _error(reply.status, f"scripted HTTP {reply.status}")
        if reply.body is not None:
            return httpx.Response(200, content=reply.body, headers={"content-type": "application/json"})
        return httpx.Response(200, json=completion(reply, self.requests[-1], len(self.requests)))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def chat_model(self, model: str = "scripted-model", *, timeout_s: float = 5.0,
                   max_retries: int = 0) -> OpenAIChatModel:
        """The real adapter talking to this script."""
        return OpenAIChatModel(model=model, base_url=BASE_URL, api_key="scripted", timeout_s=timeout_s,
                               max_retries=max_retries, http_client=httpx.Client(transport=self.transport()))

    def _next(self, body: dict[str, Any]) -> Reply | None:
        if self._answer is not None:
            return self._answer(body)
        return self._queue.pop(0) if self._queue else None


def completion(reply: Reply, body: dict[str, Any], number: int) -> dict[str, Any]:
    """The Chat Completions answer carrying `reply`, to the request `body`, the `number`th of the conversation."""
    calls = reply.raw_tool_calls or [{"id": f"call_{number}_{i}", "type": "function",
                                      "function": {"name": name, "arguments": args}}
                                     for i, (name, args) in enumerate(reply.tool_calls)]
    prompt = len(json.dumps(body.get("messages", [])) + json.dumps(body.get("tools", []))) // 4
    completion_tokens = max(1, len(json.dumps(calls) + (reply.content or "") + (reply.refusal or "")) // 4)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{number}", "object": "chat.completion", "created": 0,
        "model": body.get("model", "scripted-model"),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                  "total_tokens": prompt + completion_tokens},
    }


def _error(status: int, message: str) -> httpx.Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return httpx.Response(status, json={"error": {"message": message, "type": kind}},
                          headers={"retry-after-ms": "10"})
