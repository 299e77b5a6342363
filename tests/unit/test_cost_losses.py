"""GPU-hours lost, the arithmetic: a loss split across ISO weeks, overlapping leases of one node counted once for the
runbook that took it out first, and the totals per runbook and week."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpuops.cost.losses import IncidentLoss, merged_intervals, split_by_week, totals, week_of

SUNDAY_EVENING = datetime(2026, 1, 4, 22, 0, tzinfo=UTC)  # ISO week 2026-W01 ends at midnight


def test_a_loss_across_midnight_on_sunday_is_split_between_the_two_weeks() -> None:
    weeks: dict[str, float] = {}
    total = split_by_week(SUNDAY_EVENING, SUNDAY_EVENING + timedelta(hours=3), 8, weeks)
    assert total == pytest.approx(24.0)
    assert weeks == {"2026-W01": pytest.approx(16.0), "2026-W02": pytest.approx(8.0)}
    assert week_of(SUNDAY_EVENING + timedelta(hours=2)) == "2026-W02"


def test_overlapping_leases_count_once_for_the_first_runbook_and_separate_ones_apart() -> None:
    t = SUNDAY_EVENING
    merged = merged_intervals([(t + timedelta(minutes=5), t + timedelta(hours=2), "drain_node"),
                      (t, t + timedelta(hours=1), "cordon_node"),
                      (t + timedelta(hours=5), t + timedelta(hours=6), "reboot_node")])
    assert merged == [(t, t + timedelta(hours=2), "cordon_node"), (t + timedelta(hours=5), t + timedelta(hours=6),
                                                                    "reboot_node")]


def test_totals_per_runbook_and_week() -> None:
    losses = [IncidentLoss(1, "a", "n1", "cordon_node", 10.0, {"2026-W01": 6.0, "2026-W02": 4.0}),
              IncidentLoss(2, "b", "n2", "none", 1.5, {"2026-W02": 1.5}),
              IncidentLoss(3, "c", "n3", "cordon_node", 2.0, {"2026-W02": 2.0})]
    by_runbook, by_week = totals(losses)
    assert by_runbook == {"cordon_node": 12.0, "none": 1.5}
    assert by_week == {"2026-W01": 6.0, "2026-W02": 7.5} and list(by_week) == ["2026-W01", "2026-W02"]
