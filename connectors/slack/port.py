"""SlackPort: what gpuops asks of Slack's Web API; the real adapter and the in-memory fake both provide it.
Every error is a `connectors.slack.errors.SlackError`; `SlackUnavailable` means retry later."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from connectors.slack.models import MessageRef


@runtime_checkable
class SlackPort(Protocol):
    def post_message(self, *, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                     thread_ts: str | None = None, broadcast: bool = False) -> MessageRef:
        """chat.postMessage; with `thread_ts`, a reply in that message's thread."""
        ...

    def update_message(self, ref: MessageRef, *, text: str, blocks: list[dict[str, Any]]) -> None:
        """chat.update of a message posted earlier."""
        ...

    def post_ephemeral(self, *, channel: str, user: str, text: str) -> None:
        """chat.postEphemeral: a message only `user` sees."""
        ...

    def respond(self, response_url: str, *, text: str) -> None:
        """An ephemeral answer through an interaction's response_url (does not replace the original)."""
        ...
