"""Local servers for incident events over real HTTP: one speaking PagerDuty's Events API v2 (`POST /v2/enqueue`,
validating each event as PagerDuty does: 202 `{"status": "success", "dedup_key": ...}` or 400 `{"status":
"invalid event", "message", "errors"}`, 429 on demand) and one webhook receiver that verifies gpuops'
HMAC-SHA256 signature the way the README tells receivers to. Both can be stopped and started again on the same
port, for an outage."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTING_KEY = "R0UT1NGKEY0123456789ABCDEFGHIJKL"
WEBHOOK_SECRET = "webhook-secret-of-some-length"
_ACTIONS = ("trigger", "acknowledge", "resolve")
_SEVERITIES = ("critical", "error", "warning", "info")
_TOP_LEVEL = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
_PAYLOAD = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}


def pagerduty_problems(event: Any) -> list[str]:
    """What PagerDuty's Events API v2 would reject in `event` (empty: it is valid)."""
    if not isinstance(event, dict):
        return ["the event is not a JSON object"]
    problems = [f"unknown field {k!r}" for k in event if k not in _TOP_LEVEL]
    if event.get("routing_key") != ROUTING_KEY:
        problems.append("'routing_key' is invalid")
    action = event.get("event_action")
    if action not in _ACTIONS:
        problems.append("'event_action' must be one of trigger, acknowledge, resolve")
    key = event.get("dedup_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
        problems.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not key:
        problems.append(f"'dedup_key' is required for {action}")
    if action == "trigger":
        problems.extend(_payload_problems(event.get("payload")))
    for link in event.get("links", []):
        if not isinstance(link, dict) or not str(link.get("href", "")).startswith(("http://", "https://")):
            problems.append("each link needs an http(s) 'href'")
    return problems


def _payload_problems(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is required for trigger"]
    problems = [f"unknown payload field {k!r}" for k in payload if k not in _PAYLOAD]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
        problems.append("'payload.summary' must be a string of 1 to 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        problems.append("'payload.source' is required")
    if payload.get("severity") not in _SEVERITIES:
        problems.append("'payload.severity' must be one of critical, error, warning, info")
    if "timestamp" in payload:
        try:
            datetime.fromisoformat(payload["timestamp"])
        except (TypeError, ValueError):
            problems.append("'payload.timestamp' must be ISO 8601")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            problems.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        problems.append("'payload.custom_details' must be an object")
    return problems


@dataclass
class Receiver:
    """What a server saw. `failures` is consumed one per request: an HTTP status to answer instead (429 comes
    with Retry-After: `retry_after`)."""

    base_url: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    retry_after: str = "1"
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def actions(self, key: str = "event_action") -> list[tuple[str, str]]:
        with self.lock:
            return [(e.get("dedup_key", ""), e[key]) for e in self.accepted]


class _Server:
    """A ThreadingHTTPServer that can stop and start again on its port."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], receiver: Receiver) -> None:
        self._handler = handler
        self.receiver = receiver
        self._httpd: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()
        receiver.base_url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ThreadingHTTPServer.allow_reuse_address = True
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        httpd.receiver = self.receiver  # type: ignore[attr-defined]
        self.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self._httpd = httpd

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None

    @property
    def receiver(self) -> Receiver:
        return self.server.receiver  # type: ignore[attr-defined,no-any-return]

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _failure(self) -> int | None:
        with self.receiver.lock:
            self.receiver.requests += 1
            return self.receiver.failures.pop(0) if self.receiver.failures else None

    def _fail(self, status: int) -> None:
        headers = {"Retry-After": self.receiver.retry_after} if status == 429 else {}
        self._answer(status, {"status": "throttle event" if status == 429 else "error",
                              "message": "rate limited" if status == 429 else "internal error"}, headers)


class _PagerDutyHandler(_Handler):
    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v2/enqueue":
            self._answer(404, {"status": "not found"})
            return
        failure = self._failure()
        if failure is not None:
            self._fail(failure)
            return
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        problems = ["the body is not JSON"] if event is None else pagerduty_problems(event)
        if self.headers.get("Content-Type") != "application/json":
            problems.append("Content-Type must be application/json")
        if problems:
            with self.receiver.lock:
                self.receiver.rejected.append({"event": event, "errors": problems})
            self._answer(400, {"status": "invalid event", "message": "Event object is invalid", "errors": problems})
            return
        with self.receiver.lock:
            self.receiver.accepted.append(event)
        self._answer(202, {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key")})


def verify(secret: str, headers: Any, raw: bytes, *, now: float, tolerance_s: float = 300.0) -> str | None:
    """The README's check of a gpuops webhook request; None when it holds, else what failed."""
    timestamp = headers.get("X-Gpuops-Timestamp", "")
    given = headers.get("X-Gpuops-Signature", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return "stale or missing timestamp"
    expected = "v1=" + hmac.new(secret.encode(), f"v1:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, given) else "bad signature"


class _WebhookHandler(_Handler):
    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        failure = self._failure()
        if failure is not None:
            self._fail(failure)
            return
        problem = verify(WEBHOOK_SECRET, self.headers, raw, now=time.time())
        if problem is not None:
            with self.receiver.lock:
                self.receiver.rejected.append({"raw": raw.decode(), "errors": [problem]})
            self._answer(401, {"error": problem})
            return
        with self.receiver.lock:
            self.receiver.accepted.append(json.loads(raw))
            self.receiver.deliveries.append(self.headers.get("X-Gpuops-Delivery", ""))
        self._answer(200, {"ok": True})


@dataclass
class Servers:
    pagerduty: Receiver
    webhook: Receiver
    pagerduty_server: _Server
    webhook_server: _Server

    @property
    def env(self) -> dict[str, str]:
        """Settings pointing gpuops at both."""
        return {"pagerduty_events_url": f"{self.pagerduty.base_url}/v2/enqueue",
                "pagerduty_routing_key": ROUTING_KEY, "webhook_url": f"{self.webhook.base_url}/hooks/gpuops",
                "webhook_secret": WEBHOOK_SECRET}


@contextmanager
def paging_servers() -> Iterator[Servers]:
    pagerduty, webhook = Receiver(), Receiver()
    pd_server, hook_server = _Server(_PagerDutyHandler, pagerduty), _Server(_WebhookHandler, webhook)
    try:
        yield Servers(pagerduty, webhook, pd_server, hook_server)
    finally:
        pd_server.stop()
        hook_server.stop()
