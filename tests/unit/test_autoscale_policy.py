"""The autoscaler's policy: bounds, the GPU budget (scale-downs weighed first, what fits approved, the rest to a
human) and the scale-down cool-down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpuops.policy.autoscale import ScalePolicy, ScaleRequest, weigh_scaling

NOW = datetime(2026, 12, 4, 14, 0, tzinfo=UTC)


def request(name: str, current: int, wanted: int, *, gpus: int = 1, lo: int = 0, hi: int = 8,
            scaled_ago_s: float | None = None) -> ScaleRequest:
    last = None if scaled_ago_s is None else NOW - timedelta(seconds=scaled_ago_s)
    return ScaleRequest("serving", name, current, wanted, lo, hi, gpus, last)


def test_within_the_budget_policy_approves_alone_and_bounds_hold() -> None:
    verdicts = weigh_scaling([request("a", 1, 3), request("b", 2, 20, hi=4), request("c", 2, 2)],
                             policy=ScalePolicy(gpu_budget=16, cooldown_s=300), now=NOW)
    got = {v.name: (v.replicas, v.gate) for v in verdicts}
    assert got == {"a": (3, "auto"), "b": (4, "auto")}  # c is already where the plan wants it
    assert any("bounded to 4" in r for v in verdicts if v.name == "b" for r in v.reasons)


def test_above_the_budget_what_fits_goes_now_and_a_human_decides_the_rest() -> None:
    verdicts = weigh_scaling([request("a", 1, 5, gpus=2), request("b", 3, 1)],
                             policy=ScalePolicy(gpu_budget=8, cooldown_s=300), now=NOW)
    # b's scale-down frees 2 GPUs first: 2 (a) + 1 (b) = 3 replicas... 2*1 + 1*1 = 3 GPUs held, 5 left → a to 3
    assert [(v.name, v.replicas, v.gate) for v in verdicts] == [("b", 1, "auto"), ("a", 3, "auto"),
                                                                  ("a", 5, "approval")]
    assert any("budget of 8" in r for r in verdicts[-1].reasons)


def test_nothing_fits_then_only_the_human_decides() -> None:
    verdicts = weigh_scaling([request("a", 4, 6)], policy=ScalePolicy(gpu_budget=4, cooldown_s=0), now=NOW)
    assert [(v.replicas, v.gate) for v in verdicts] == [(6, "approval")]


def test_a_scale_down_waits_for_the_cool_down_but_a_scale_up_does_not() -> None:
    policy = ScalePolicy(gpu_budget=16, cooldown_s=300)
    held = weigh_scaling([request("a", 4, 1, scaled_ago_s=60), request("b", 1, 2, scaled_ago_s=60)],
                         policy=policy, now=NOW)
    assert [(v.name, v.gate) for v in held] == [("a", "hold"), ("b", "auto")]
    assert "no scale-down before 2026-12-04T14:04:00+00:00" in held[0].reasons[-1]
    later = weigh_scaling([request("a", 4, 1, scaled_ago_s=301)], policy=policy, now=NOW)
    assert [(v.replicas, v.gate) for v in later] == [(1, "auto")]


def test_the_minimum_is_kept_even_when_the_plan_wants_none() -> None:
    verdicts = weigh_scaling([request("a", 3, 0, lo=1)], policy=ScalePolicy(gpu_budget=16, cooldown_s=0), now=NOW)
    assert [(v.replicas, v.gate) for v in verdicts] == [(1, "auto")]
