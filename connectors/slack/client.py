"""The real adapter: slack_sdk's WebClient against a configurable Web API base URL (Slack itself, a proxy, or
a test server). Building it contacts nothing; vendor errors become `SlackError` / `SlackUnavailable`."""

from __future__ import annotations

import http.client
import socket
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from connectors.slack.errors import SlackError, SlackUnavailable
from connectors.slack.models import MessageRef

TRANSIENT_ERRORS = frozenset({"ratelimited", "service_unavailable", "fatal_error", "internal_error",
                              "request_timeout"})
NETWORK_ERRORS = (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") or headers.get("retry-after") if headers else None
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except SlackApiError as exc:
        response = exc.response
        error = str(response.get("error", "")) if isinstance(response.data, dict) else ""
        status = response.status_code
        if status == 429 or status >= 500 or error in TRANSIENT_ERRORS:
            raise SlackUnavailable(f"{what}: Slack answered {status} {error or ''}".strip() + "; retrying later",
                                   retry_after_s=_retry_after(response.headers)) from exc
        raise SlackError(f"{what}: Slack refused it ({error or status}); check the bot token, its chat:write "
                         "scope and that the bot is in the channel") from exc
    except NETWORK_ERRORS as exc:
        raise SlackUnavailable(f"{what}: Slack is unreachable ({exc}); retrying later") from exc
    except SlackClientError as exc:
        raise SlackError(f"{what}: {exc}") from exc


class WebApiSlack:
    """SlackPort over Slack's Web API."""

    def __init__(self, *, token: str, base_url: str, timeout_s: float = 5.0,
                 webhook_factory: Callable[[str], WebhookClient] | None = None) -> None:
        self.client = WebClient(token=token, base_url=base_url, timeout=max(1, round(timeout_s)))
        self.timeout_s = timeout_s
        self._webhook = webhook_factory or (lambda url: WebhookClient(url, timeout=max(1, round(timeout_s))))

    def post_message(self, *, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                     thread_ts: str | None = None, broadcast: bool = False) -> MessageRef:
        with _translated("chat.postMessage"):
            response = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks, thread_ts=thread_ts,
                                                    reply_broadcast=broadcast if thread_ts else None)
        return MessageRef(channel=str(response.get("channel") or channel), ts=str(response["ts"]))

    def update_message(self, ref: MessageRef, *, text: str, blocks: list[dict[str, Any]]) -> None:
        with _translated("chat.update"):
            self.client.chat_update(channel=ref.channel, ts=ref.ts, text=text, blocks=blocks)

    def post_ephemeral(self, *, channel: str, user: str, text: str) -> None:
        with _translated("chat.postEphemeral"):
            self.client.chat_postEphemeral(channel=channel, user=user, text=text)

    def respond(self, response_url: str, *, text: str) -> None:
        with _translated("response_url"):
            response = self._webhook(response_url).send(text=text, response_type="ephemeral",
                                                        replace_original=False)
        if response.status_code == 429 or response.status_code >= 500:
            raise SlackUnavailable(f"response_url: Slack answered {response.status_code}; retrying later")
        if response.status_code >= 400:
            raise SlackError(f"response_url: Slack refused it ({response.status_code} {response.body})")
