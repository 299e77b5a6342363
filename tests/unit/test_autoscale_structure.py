"""The trace-structure figures on hand-made traces with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.autoscale.structure import (
    GroupedTrace,
    announced,
    describe,
    main,
    next_model_seen,
    quiet_spells,
    read_grouped,
    recurrence,
    timeout_bound,
    told_where_groups_go,
)
from simulator.request_trace import read_requests
from tests.unit.autoscale_traces import synthetic_rows, write_requests


def grouped(rows: list[tuple[float, float, int, int]]) -> GroupedTrace:
    """(arrival, service, model, group) rows in arrival order."""
    a = np.array(rows, dtype=np.float64)
    return GroupedTrace(a[:, 0], a[:, 1], a[:, 2].astype(np.int64), a[:, 3].astype(np.int64))


def test_quiet_spells_run_from_the_end_of_the_models_latest_work() -> None:
    t = grouped([(0, 50, 0, 0), (20, 10, 0, 0), (100, 10, 0, 0), (130, 5, 1, 0)])
    assert list(quiet_spells(t)) == [np.inf, -30.0, 50.0, np.inf]


def test_the_hindsight_timeout_keeps_a_model_up_across_the_short_gaps_only_when_they_are_worth_it() -> None:
    t = grouped([(0, 0, 0, 0), (100, 0, 0, 0), (200, 0, 0, 0), (10200, 0, 0, 0)])
    spell = quiet_spells(t)
    share, hours = timeout_bound(t, spell, price_s=300)
    # a 100 s timeout: the two short gaps served warm (200 s), the long one costs 100 s and a cold start;
    # the first request finds the model down whatever the timeout
    assert share == 0.5 and hours == pytest.approx(300 / 3600)
    assert timeout_bound(t, spell, price_s=50) == (1.0, 0.0)  # a cold start cheaper than 100 s up: no timeout


def test_a_scaler_told_where_each_group_goes_next_serves_those_requests_warm_at_no_cost() -> None:
    # model 0 used by group 0 at 0, 100 and 200 s, then woken at 10,200 s by group 1, which called model 1 just before
    t = grouped([(0, 0, 0, 0), (100, 0, 0, 0), (200, 0, 0, 0), (10150, 0, 1, 1), (10200, 0, 0, 1)])
    told = told_where_groups_go(t, lead_s=600)
    assert list(told) == [False, False, False, False, True]
    assert not told_where_groups_go(t, lead_s=30).any()  # 50 s before is not within 30 s
    spell = quiet_spells(t)
    share, hours = timeout_bound(t, spell, price_s=300)
    # untold: a 100 s timeout, the 10,000 s gap costs 100 s and a cold start; the first requests of both models
    assert share == 3 / 5 and hours == pytest.approx(300 / 3600)
    share, hours = timeout_bound(t, spell, price_s=300, told=told)
    assert share == 2 / 5 and hours == pytest.approx(200 / 3600)  # the told wake-up: neither down nor idle


def test_a_groups_next_model_is_seen_before_only_when_it_made_that_move_before() -> None:
    t = grouped([(0, 1, 0, 0), (50, 1, 0, 0),         # group 0: model 0 twice (no move),
                 (100, 1, 1, 0),                      # then 1 (a move never seen)
                 (200, 1, 0, 1), (300, 1, 2, 1),      # group 1: 0 then 2 (the pair 0 -> 2 never seen either)
                 (5000, 1, 0, 0), (5100, 1, 1, 0),    # group 0 again 0 -> 1: its own move, seen before
                 (9000, 1, 0, 2), (9050, 1, 0, 3),
                 (9100, 1, 2, 2),                     # group 2: 0 -> 2, a pair group 1 made
                 (9100.5, 1, 2, 3)])                  # group 3: 0 -> 2 too, but model 2 is up: not counted
    report = next_model_seen(t, quiet_spells(t), lead_s=600, down_s=60)
    assert report["told_requests_down"] == 4
    assert report["share_move_seen_in_group"] == 0.25 and report["share_pair_seen"] == 0.5
    assert report["followers_p50"] == 1.5  # after model 0: nothing, then 1, then {1, 2} twice
    assert next_model_seen(t, quiet_spells(t), lead_s=40, down_s=60)["told_requests_down"] == 0


def test_a_wake_up_is_announced_by_the_same_groups_request_to_another_model_just_before() -> None:
    t = grouped([(0, 10, 0, 7), (60, 10, 1, 7), (5000, 10, 2, 8), (9000, 10, 1, 8)])
    report = announced(t, quiet_spells(t), quiet_s=900, lead_s=600)
    assert report["requests_after_quiet"] == 4
    assert report["share_announced"] == 0.25  # only model 1's first request, 60 s after group 7 used model 0
    assert report["lead_p50_s"] == 60.0 and report["share_of_leads_within_120_s"] == 1.0


def test_a_request_an_hour_after_one_to_the_same_model_recurs() -> None:
    t = grouped([(0, 10, 0, 0), (3630, 10, 0, 0), (95000, 10, 0, 0)])
    report = recurrence(t, quiet_spells(t), quiet_s=900)
    assert report["share_recurring_after_3600_s"] == round(1 / 3, 4)
    assert report["share_recurring_after_86400_s"] == 0.0


def test_the_file_is_read_in_the_replays_order_and_described(tmp_path: Path) -> None:
    path = write_requests(tmp_path / "r.csv.gz", synthetic_rows(2, 3, seed=2))
    t = read_grouped(path)
    assert np.array_equal(t.arrival, read_requests(path).arrival)
    assert np.array_equal(t.model, read_requests(path).model)
    report = describe(t)
    shares = [v["share_down"] for v in report["timeout_bound_by_cold_start_price_s"].values()]
    hours = [v["idle_gpu_hours"] for v in report["timeout_bound_by_cold_start_price_s"].values()]
    assert shares == sorted(shares, reverse=True) and hours == sorted(hours)  # dearer cold starts: more kept up
    assert set(report["told_bound_by_cold_start_price_s"]) == set(report["timeout_bound_by_cold_start_price_s"])
    spell, told = quiet_spells(t), told_where_groups_go(t, lead_s=600)
    for price in (300.0, 3600.0):  # being told never makes the best trade of idle time for cold starts dearer
        (down, idle), (told_down, told_idle) = (timeout_bound(t, spell, price, where) for where in (None, told))
        assert told_idle * 3600 + told_down * t.arrival.size * price <= idle * 3600 + down * t.arrival.size * price


def test_the_command_prints_json_and_refuses_a_file_without_groups(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write_requests(tmp_path / "r.csv", synthetic_rows(1, 2, seed=4))
    assert main(["--requests", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["requests"] > 0
    bare = tmp_path / "bare.csv"
    bare.write_text("gmt_create,exec_time_seconds,checkpoint_model_version_id\n2024-11-15 10:00:00,5,M0001\n")
    assert main(["--requests", str(bare)]) == 1
    assert "field 'groupId': missing from the header" in capsys.readouterr().err
