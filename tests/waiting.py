"""Bounded polling for tests: wait for a condition with a deadline instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str],
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `predicate` until it returns something truthy and return that value; fail with `message` (a
    callable one is rendered at the deadline, to show the state then) after `timeout` seconds.

    Exceptions of the `ignoring` types count as "not yet" (the thing probed may still be starting); the last
    one is named in the failure. Any other exception, an AssertionError included, ends the wait at once, so a
    predicate can give up early when what it waits on has died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignoring as exc:
            last = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (after {timeout:g}s" + (f"; last error: {last!r})" if last else ")"))
        time.sleep(interval)
