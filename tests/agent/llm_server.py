"""A local HTTP server speaking the Chat Completions protocol (`POST /v1/chat/completions`), for the tests that
test HTTP itself: a real client timeout, error statuses retried over a real connection, a server that answers
nonsense, the configured base URL. It serves `connectors.llm.ScriptedChat` (the in-memory fake every other test
uses), so both answer alike; a `Reply(timeout=True)` holds the request open until the test ends, which makes
the client's own timeout fire.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from connectors.llm import Reply, ScriptedChat, call

__all__ = ["Reply", "ServedLLM", "call", "scripted_llm"]


@dataclass
class ServedLLM:
    """The scripted model behind a loopback port: `base_url` to configure, `requests` it received."""

    chat: ScriptedChat
    base_url: str = ""
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.chat.requests

    def respond(self, method: str, path: str, body: bytes) -> httpx.Response:
        request = httpx.Request(method, f"{self.base_url.removesuffix('/v1')}{path}", content=body)
        try:
            return self.chat(request)
        except httpx.TimeoutException:
            self.release.wait(30)
            return httpx.Response(504, json={"error": {"message": "released", "type": "server_error"}})


@contextmanager
def scripted_llm(script: list[Reply]) -> Iterator[ServedLLM]:
    served = ServedLLM(ScriptedChat(script))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            response = served.respond("POST", self.path, body)
            try:
                self.send_response(response.status_code)
                for name in ("Content-Type", "retry-after-ms"):
                    if name in response.headers:
                        self.send_header(name, response.headers[name])
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout) before the answer came

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield served
    finally:
        served.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
