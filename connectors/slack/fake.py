"""An in-memory SlackPort for unit tests: records what would have been sent; can be set to be unreachable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.slack.errors import SlackUnavailable
from connectors.slack.models import MessageRef


@dataclass
class InMemorySlack:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    down: bool = False
    _next_ts: int = 1000

    def _record(self, method: str, **args: Any) -> None:
        if self.down:
            raise SlackUnavailable(f"{method}: Slack is unreachable (fake set down); retrying later")
        self.calls.append((method, args))

    def post_message(self, *, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                     thread_ts: str | None = None, broadcast: bool = False) -> MessageRef:
        self._record("chat.postMessage", channel=channel, text=text, blocks=blocks, thread_ts=thread_ts,
                     broadcast=broadcast)
        self._next_ts += 1
        return MessageRef(channel, f"{self._next_ts}.000100")

    def update_message(self, ref: MessageRef, *, text: str, blocks: list[dict[str, Any]]) -> None:
        self._record("chat.update", channel=ref.channel, ts=ref.ts, text=text, blocks=blocks)

    def post_ephemeral(self, *, channel: str, user: str, text: str) -> None:
        self._record("chat.postEphemeral", channel=channel, user=user, text=text)

    def respond(self, response_url: str, *, text: str) -> None:
        self._record("response_url", url=response_url, text=text)
