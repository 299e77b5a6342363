"""The sign-in throttle on a fake clock: a lockout starts at the limit, says when it ends, ends when the oldest
counted failure ages out, and memory stays bounded however many names and addresses are tried."""

from __future__ import annotations

import pytest

from entrypoints.web import throttle
from entrypoints.web.throttle import Lockout, SignInThrottle, StreamSlots, TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lockout_starts_at_the_limit_and_ends_when_the_oldest_failure_ages_out() -> None:
    clock = Clock()
    guard = SignInThrottle(per_user=3, per_client=10, window_s=60, clock=clock)
    assert guard.failed("adam", "10.0.0.1") is None
    clock.now += 20
    assert guard.failed("adam", "10.0.0.1") is None
    clock.now += 20
    assert guard.failed("adam", "10.0.0.1") == Lockout("user", 20)
    assert guard.locked("adam", "10.0.0.9") == Lockout("user", 20)  # the name is locked from any address
    assert guard.locked("vera", "10.0.0.1") is None
    clock.now += 20
    assert guard.locked("adam", "10.0.0.1") is None


def test_a_client_is_locked_out_across_names_and_a_success_clears_only_the_name() -> None:
    guard = SignInThrottle(per_user=5, per_client=2, window_s=60, clock=Clock())
    assert guard.failed("a", "10.0.0.1") is None
    assert guard.failed("b", "10.0.0.1") == Lockout("client", 60)
    assert guard.failed("c", "10.0.0.1") is None  # already locked: no second lockout event
    guard.succeeded("a")
    assert guard.locked("a", "10.0.0.1") == Lockout("client", 60)


def test_tracked_names_and_addresses_stay_bounded() -> None:
    guard = SignInThrottle(per_user=5, per_client=5, window_s=60, clock=Clock())
    for i in range(throttle.MAX_TRACKED + 50):
        guard.failed(f"name{i}", f"10.0.{i // 256}.{i % 256}")
    assert guard.tracked <= throttle.MAX_TRACKED


def test_stream_slots_are_per_user_and_given_back() -> None:
    slots = StreamSlots(per_user=1)
    slots.take("vera")
    slots.take("adam")
    with pytest.raises(TooManyRequests) as refused:
        slots.take("vera")
    assert refused.value.retry_after_s > 0
    slots.give_back("vera")
    slots.take("vera")
