"""An in-memory channel for tests of the code that decides what to send."""

from __future__ import annotations

from typing import Any

from connectors.paging.errors import ChannelUnavailable


class RecordingChannel:
    """Records every event it is sent; while `down` it raises ChannelUnavailable instead."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.down = False

    def send(self, body: dict[str, Any], *, delivery_id: str) -> None:
        if self.down:
            raise ChannelUnavailable(f"{self.name} is down")
        self.sent.append((delivery_id, body))
