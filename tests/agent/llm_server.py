"""A local server speaking the Chat Completions protocol (`POST /v1/chat/completions`), replaying scripted
answers in the real response shape (tool calls, refusals, usage tokens) and recording every request.

Prompt tokens are estimated at four characters per token of the request's messages and tools, so the usage it
reports grows with what the planner really sends. A `hang` step holds the request open until the test ends,
which makes the client's own timeout fire.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer."""

    tool_calls: list[tuple[str, str]] = field(default_factory=list)   # (name, raw JSON arguments)
    content: str | None = None
    refusal: str | None = None
    status: int = 200
    hang: bool = False
    raw_tool_calls: list[dict[str, Any]] | None = None   # sent as they are (shapes the planner does not expect)


def call(name: str, **arguments: Any) -> tuple[str, str]:
    return name, json.dumps(arguments)


@dataclass
class ScriptedLLM:
    script: list[Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    base_url: str = ""

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append(body)
        if not self.script:
            return 400, {"error": {"message": "the script has no more answers", "type": "invalid_request_error"}}
        reply = self.script.pop(0)
        if reply.hang:
            self.release.wait(30)
            return 504, {"error": {"message": "released", "type": "server_error"}}
        if reply.status != 200:
            return reply.status, {"error": {"message": f"scripted HTTP {reply.status}", "type": "server_error"}}
        prompt = len(json.dumps(body.get("messages", [])) + json.dumps(body.get("tools", []))) // 4
        calls = reply.raw_tool_calls or [{"id": f"call_{len(self.requests)}_{i}", "type": "function",
                                          "function": {"name": name, "arguments": args}}
                                         for i, (name, args) in enumerate(reply.tool_calls)]
        completion = max(1, len(json.dumps(calls) + (reply.content or "") + (reply.refusal or "")) // 4)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
        if calls:
            message["tool_calls"] = calls
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }


@contextmanager
def scripted_llm(script: list[Reply]) -> Iterator[ScriptedLLM]:
    llm = ScriptedLLM(list(script))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            status, payload = llm.answer(body)
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout) before the answer came

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    llm.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield llm
    finally:
        llm.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
