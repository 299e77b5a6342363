"""Where people hear about plans: the notifier port. The agent bridge tells it when an action waits for
approval and how its execution went; a decision tells it who decided. The Slack notifier implements it when
Slack is configured; otherwise nothing is sent and the dashboard and CLI remain the places to decide."""

from __future__ import annotations

from typing import Protocol


class Notifier(Protocol):
    def approval_requested(self, action_id: int) -> None:
        """Action `action_id` waits for a human decision."""

    def decision_recorded(self, action_id: int) -> None:
        """Someone approved or rejected action `action_id` (in any channel)."""

    def progress(self, action_id: int, status: str, detail: str) -> None:
        """Action `action_id` moved on: executing, succeeded/verified, failed, rolled back, expired."""

    def retry_pending(self) -> int:
        """Send what an outage held back (called periodically); returns how many messages went out."""


class NullNotifier:
    """No outside channel configured."""

    def approval_requested(self, action_id: int) -> None:
        return None

    def decision_recorded(self, action_id: int) -> None:
        return None

    def progress(self, action_id: int, status: str, detail: str) -> None:
        return None

    def retry_pending(self) -> int:
        return 0
