"""What one client can make the web service spend: failed sign-ins per user name and per client address within a
window (beyond the limit every attempt is refused with 429 and Retry-After, the right password too), and open
live-update streams per user. State lives in this process and stays bounded whatever the clients send."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gpuops.errors import GpuopsError

MAX_TRACKED = 10_000  # user names and addresses remembered at once; beyond it the oldest are forgotten


class TooManyRequests(GpuopsError):
    """Refused for now: too many failed sign-ins or open streams. The answer is 429 with Retry-After."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Busy(GpuopsError):
    """The server is already checking as many passwords as it allows at once: 503, try again in a second."""

    retry_after_s = 1


@dataclass(frozen=True)
class Lockout:
    scope: Literal["user", "client"]
    retry_after_s: int


class SignInThrottle:
    """Failed sign-ins in a sliding window, counted per user name and per client address."""

    def __init__(self, *, per_user: int, per_client: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limits: dict[str, int] = {"user": per_user, "client": per_client}
        self._window_s = window_s
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def locked(self, name: str, client: str) -> Lockout | None:
        """The lockout in force for this user name or this client, if any."""
        with self._lock:
            return self._lockout(name, client, self._clock())

    def failed(self, name: str, client: str) -> Lockout | None:
        """Count a failed attempt; the lockout it starts, if it is the one that reaches a limit."""
        with self._lock:
            now = self._clock()
            before = self._lockout(name, client, now)
            for key in (("user", name), ("client", client)):
                self._failures.setdefault(key, deque()).append(now)
            self._forget_oldest()
            return self._lockout(name, client, now) if before is None else None

    @property
    def tracked(self) -> int:
        """How many user names and client addresses are remembered now."""
        return len(self._failures)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(("user", name), None)

    def _lockout(self, name: str, client: str, now: float) -> Lockout | None:
        scopes: tuple[tuple[Literal["user", "client"], str], ...] = (("user", name), ("client", client))
        for scope, key in scopes:
            times = self._failures.get((scope, key))
            if times is None:
                continue
            while times and times[0] <= now - self._window_s:
                times.popleft()
            if not times:
                del self._failures[(scope, key)]
                continue
            limit = self._limits[scope]
            if len(times) >= limit:
                until = times[-limit] + self._window_s
                return Lockout(scope, max(1, math.ceil(until - now)))
        return None

    def _forget_oldest(self) -> None:
        while len(self._failures) > MAX_TRACKED:
            del self._failures[next(iter(self._failures))]


class StreamSlots:
    """How many live-update streams each user holds open."""

    def __init__(self, per_user: int) -> None:
        self._per_user = per_user
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, user: str) -> None:
        with self._lock:
            held = self._open.get(user, 0)
            if held >= self._per_user:
                raise TooManyRequests(f"{user} already has {held} live-update streams open; close a dashboard tab",
                                      retry_after_s=5)
            self._open[user] = held + 1

    def give_back(self, user: str) -> None:
        with self._lock:
            held = self._open.get(user, 0) - 1
            if held > 0:
                self._open[user] = held
            else:
                self._open.pop(user, None)
