"""`gpuops autoscale eval` through click, on a small synthetic trace written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from entrypoints.commands import autoscale as autoscale_command
from tests.unit.autoscale_traces import synthetic_rows, write_cold_starts, write_requests


def invoke(*args: str) -> click.testing.Result:
    group = click.Group("gpuops")
    autoscale_command.register(group)
    return CliRunner().invoke(group, ["autoscale", "eval", *args])


def files(tmp_path: Path) -> tuple[Path, Path]:
    requests = write_requests(tmp_path / "requests.csv.gz", synthetic_rows(2, 3, seed=1))
    cold = write_cold_starts(tmp_path / "cold.csv", [2600, 22700, 25000, 42000, 51000])
    return requests, cold


def test_help_names_both_files() -> None:
    result = invoke("--help")
    assert result.exit_code == 0 and "--requests" in result.output and "--coldstarts" in result.output


def test_json_report_has_every_policy_with_hours_waits_and_targets(tmp_path: Path) -> None:
    requests, cold = files(tmp_path)
    result = invoke("--requests", str(requests), "--coldstarts", str(cold), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["policies"]) == {"gpuops", "reactive", "warm-1", "oracle"}
    for summary in report["policies"].values():
        assert {"gpu_hours", "wait_p50_s", "wait_p95_s", "wait_p99_s", "share_wait_over_5s"} <= set(summary)
    assert report["policies"]["oracle"]["share_wait_over_5s"] == 0.0
    assert "keep_alive_hindsight" not in report  # only on request: it replays the trace once per keep-alive tried
    assert report["policies"]["oracle"]["gpu_hours"] <= report["policies"]["reactive"]["gpu_hours"]
    assert report["policies"]["warm-1"]["gpu_hours"] > report["policies"]["reactive"]["gpu_hours"]
    assert set(report["targets"]) >= {"target_met", "moonshot_met", "gpu_hours_vs_reactive"}


def test_the_table_and_a_held_out_half(tmp_path: Path) -> None:
    requests, cold = files(tmp_path)
    result = invoke("--requests", str(requests), "--coldstarts", str(cold), "--part", "second-half")
    assert result.exit_code == 0, result.output
    assert "second-half" in result.output
    assert all(name in result.output for name in ("gpuops", "reactive", "warm-1", "oracle", "run took"))


def test_terms_can_be_left_out_of_the_rate_for_comparison_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    requests, cold = files(tmp_path)
    args = ("--requests", str(requests), "--coldstarts", str(cold), "--json")
    full = json.loads(invoke(*args).output)
    assert full["planner_terms"] == {"seasonal": True, "gate": True, "hazard": False, "cross": True}
    result = invoke(*args, "--without", "gate", "--without", "cross", "--with", "hazard")
    assert result.exit_code == 0, result.output
    bare = json.loads(result.output)
    assert bare["planner_terms"] == {"seasonal": True, "gate": False, "hazard": True, "cross": False}
    assert bare["policies"]["reactive"] == full["policies"]["reactive"]
    assert bare["policies"]["gpuops"] != full["policies"]["gpuops"]
    refused = invoke(*args, "--without", "weather")
    assert refused.exit_code == 2 and "'weather' is not one of" in refused.output


def test_a_malformed_line_is_an_error_naming_file_line_and_field(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "r.csv", [(0, 5, "M0001")],
                              extra=["2024-11-15 10:00:00,TXT_2_IMG,SUCCEED,slow,G0,1,,1,30,M0001,0"])
    cold = write_cold_starts(tmp_path / "cold.csv", [22700])
    result = invoke("--requests", str(requests), "--coldstarts", str(cold))
    assert result.exit_code == 1
    assert f"{requests}, line 3, field 'exec_time_seconds': 'slow' is not a number" in result.output


def test_the_keep_alive_bound_is_reported_on_request_and_no_hindsight_keep_alive_beats_its_frontier(
        tmp_path: Path) -> None:
    requests, cold = files(tmp_path)
    result = invoke("--requests", str(requests), "--coldstarts", str(cold), "--json", "--keep-alive-bound")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    bound = report["keep_alive_hindsight"]
    reactive = report["policies"]["reactive"]
    # reactive is one keep-alive (300 s for every model): the hindsight frontier does at least as well at its cost
    assert bound["share_wait_over_5s_at_reactive_gpu_hours"] <= reactive["share_wait_over_5s"]
    hours = [h for h, _ in bound["frontier"]]
    assert hours == sorted(hours)
    # the table the command prints without --json, from the same report (one replay of the frontier, not two)
    assert "keep-alive chosen per model with hindsight" in autoscale_command._table(report)


def live(tmp_path: Path, *args: str) -> click.testing.Result:
    """`gpuops autoscale live` on a scenario without a `serving` section."""
    scenario = tmp_path / "plain.yaml"
    scenario.write_text("name: plain\nfleet: {nodes: 1, gpus_per_node: 8}\nduration: 1h\nworkloads: []\n")
    group = click.Group("gpuops")
    autoscale_command.register(group)
    return CliRunner().invoke(group, ["autoscale", "live", "--scenario", str(scenario), *args])


def test_live_refuses_a_scenario_without_a_replayed_trace(tmp_path: Path) -> None:
    result = live(tmp_path, "--history", "10m")
    assert result.exit_code == 1
    assert "has no `serving.replay` of a request trace to run live" in result.output


def test_live_refuses_a_malformed_duration(tmp_path: Path) -> None:
    result = live(tmp_path, "--history", "soon")
    assert result.exit_code == 1 and "soon" in result.output
