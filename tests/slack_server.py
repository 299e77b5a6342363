"""A local server speaking Slack's Web API (`POST /api/chat.postMessage`, `chat.update`, `chat.postEphemeral`,
`auth.test`) and accepting interaction `response_url` posts (`POST /response/<id>`), over real HTTP. It records
every call that succeeded and can fail on demand: HTTP 500, `ratelimited` (429 with Retry-After), a hang longer
than the client's timeout, or down for everything."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from tests.waiting import wait_for

TOKEN = "xoxb-test-token"
CHANNEL_ID = "C0GPUOPS"


@dataclass
class Call:
    method: str
    args: dict[str, Any]


@dataclass
class FakeSlack:
    base_url: str = ""
    calls: list[Call] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)   # consumed one per request: 500 | ratelimited | hang
    down: str | None = None                             # every request fails this way while set
    hang_s: float = 2.5
    attempts: int = 0
    _ts: int = 1_700_000_000
    _lock: threading.Lock = field(default_factory=threading.Lock)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def response_url(self, name: str) -> str:
        return f"{self.base_url}/response/{name}"

    def of(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c.args for c in self.calls if c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The calls of `method` once there are at least `count` of them."""

        def enough() -> list[dict[str, Any]] | None:
            got = self.of(method)
            return got if len(got) >= count else None

        return wait_for(enough, timeout=timeout, interval=0.02,
                        message=lambda: f"expected {count} {method} call(s), got {self.of(method)}; all: {self.calls}")

    def failure(self) -> str | None:
        with self._lock:
            self.attempts += 1
            if self.down:
                return self.down
            return self.failures.pop(0) if self.failures else None

    def answer(self, method: str, args: dict[str, Any], auth: str | None) -> tuple[int, dict[str, Any]]:
        if method == "auth.test":
            return 200, {"ok": True, "team_id": "T0TEST", "user_id": "U0BOT", "bot_id": "B0BOT"}
        if auth != f"Bearer {TOKEN}":
            return 200, {"ok": False, "error": "invalid_auth"}
        with self._lock:
            if method == "chat.postMessage":
                if args.get("channel") not in (CHANNEL_ID, "#gpu-ops", "gpu-ops"):
                    return 200, {"ok": False, "error": "channel_not_found"}
                self._ts += 1
                ts = f"{self._ts}.000100"
                self.messages[ts] = dict(args)
                self.calls.append(Call(method, args))
                return 200, {"ok": True, "channel": CHANNEL_ID, "ts": ts, "message": {"text": args.get("text")}}
            if method == "chat.update":
                if args.get("channel") != CHANNEL_ID or args.get("ts") not in self.messages:
                    return 200, {"ok": False, "error": "message_not_found"}
                self.messages[str(args["ts"])].update(args)
                self.calls.append(Call(method, args))
                return 200, {"ok": True, "channel": CHANNEL_ID, "ts": args["ts"], "text": args.get("text")}
            if method == "chat.postEphemeral":
                self.calls.append(Call(method, args))
                return 200, {"ok": True, "message_ts": f"{self._ts}.000200"}
        return 200, {"ok": False, "error": "unknown_method"}


def _parse(content_type: str, raw: bytes) -> dict[str, Any]:
    if "json" in content_type:
        parsed: dict[str, Any] = json.loads(raw or b"{}")
        return parsed
    args: dict[str, Any] = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
    if isinstance(args.get("blocks"), str):
        args["blocks"] = json.loads(args["blocks"])
    return args


@contextmanager
def fake_slack() -> Iterator[FakeSlack]:
    slack = FakeSlack()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            failure = slack.failure()
            if failure == "hang":
                time.sleep(slack.hang_s)
                failure = "500"
            if failure == "500":
                self._send(500, {"ok": False, "error": "internal_error"})
                return
            if failure == "ratelimited":
                self._send(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
                return
            args = _parse(self.headers.get("Content-Type", ""), raw)
            if self.path.startswith("/response/"):
                with slack._lock:
                    slack.calls.append(Call("response_url", {"url": self.path, **args}))
                self._send(200, "ok")
                return
            if not self.path.startswith("/api/"):
                self._send(404, {"ok": False, "error": "not_found"})
                return
            status, body = slack.answer(self.path.removeprefix("/api/"), args, self.headers.get("Authorization"))
            self._send(status, body)

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    slack.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-slack", daemon=True)
    thread.start()
    try:
        yield slack
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
