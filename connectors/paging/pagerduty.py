"""PagerDuty's Events API v2: POST /v2/enqueue with the integration's routing key. 202 is accepted; 400 is an
invalid event (refused, with PagerDuty's message and errors); 429 and 5xx are retried later."""

from __future__ import annotations

import json
from typing import Any

import httpx

from connectors.paging.errors import ChannelRefused
from connectors.paging.http import post_json

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_LIMIT = 1024
DEDUP_KEY_LIMIT = 255


class PagerDutyEvents:
    """EventChannel over the Events API v2. A body is an event without its `routing_key`: the key is added here,
    so the store never holds it."""

    name = "pagerduty"

    def __init__(self, *, routing_key: str, events_url: str = DEFAULT_EVENTS_URL, timeout_s: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._routing_key = routing_key
        self._url = events_url
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def send(self, body: dict[str, Any], *, delivery_id: str) -> None:
        event = {**body, "routing_key": self._routing_key}
        what = f"PagerDuty {body.get('event_action')} {body.get('dedup_key')}"
        try:
            post_json(self._client, self._url, json.dumps(event).encode(), {}, what=what)
        except ChannelRefused as exc:
            raise ChannelRefused(f"{what}: refused with {exc.status}: {_said(exc.body) or exc}", status=exc.status,
                                 body=exc.body) from exc

    def close(self) -> None:
        self._client.close()


def _said(body: str) -> str:
    """PagerDuty's error answer (`{"status", "message", "errors": [...]}`) in one line; "" when it is not one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(answer, dict):
        return ""
    errors = "; ".join(str(e) for e in answer.get("errors") or [])
    return ": ".join(part for part in (str(answer.get("message") or answer.get("status") or ""), errors) if part)
