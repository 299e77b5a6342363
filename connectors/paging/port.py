"""The port every incident-event channel implements."""

from __future__ import annotations

from typing import Any, Protocol


class EventChannel(Protocol):
    name: str

    def send(self, body: dict[str, Any], *, delivery_id: str) -> None:
        """Deliver one event. `delivery_id` is the same on every retry of that event (receivers deduplicate on
        it). Raises ChannelUnavailable (retry later) or ChannelRefused (never retry)."""
