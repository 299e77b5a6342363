"""The channels' exceptions; httpx's errors and the receivers' refusals are translated into these."""

from __future__ import annotations


class ChannelRefused(Exception):
    """The receiver refused the event for a reason a retry will not fix (400 and most other 4xx): the message
    carries what it said; `status` and `body` are its HTTP answer (0 and "" when it never answered)."""

    def __init__(self, message: str, *, status: int = 0, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ChannelUnavailable(Exception):
    """The receiver could not be reached, timed out, failed (5xx) or rate-limited us (429): retry later.
    `retry_after_s` carries its Retry-After when it sent one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
