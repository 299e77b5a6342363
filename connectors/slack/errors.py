"""The Slack port's exceptions; slack_sdk's errors are translated into these at the boundary."""

from __future__ import annotations


class SlackError(Exception):
    """Slack refused the call for a reason a retry will not fix (bad token, unknown channel, bad blocks)."""


class SlackUnavailable(SlackError):
    """Slack could not be reached, timed out, failed (5xx) or rate-limited us: retry later.
    `retry_after_s` carries Slack's Retry-After when it sent one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
