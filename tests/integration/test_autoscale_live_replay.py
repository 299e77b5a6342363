"""gpuops' autoscaling cycle live on a replayed request trace: the twin serves the trace's base models as
Deployments, gpuops scales them every 15 s through the twin's Kubernetes API and /metrics, and the same span
goes through the offline replica simulator in the same run, so the live figures read against the offline ones."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from entrypoints.commands import autoscale as autoscale_command
from evaluation.autoscale.live import LiveInputs, run_live
from tests.unit.autoscale_traces import write_cold_starts, write_requests

GAP_S = 480.0  # longer than reactive's 300 s idle timeout, short against what a warm replica saves


def test_a_model_asked_every_eight_minutes_is_kept_warm_live_where_reactive_lets_it_go(tmp_path: Path) -> None:
    rows = [(i * GAP_S, 20.0, "M0001") for i in range(int(3 * 3600 / GAP_S))]
    write_requests(tmp_path / "requests.csv", rows)
    write_cold_starts(tmp_path / "loads.csv", [30000.0, 35000.0, 40000.0])
    scenario = tmp_path / "served.yaml"
    scenario.write_text("name: served\nfleet: {nodes: 1, gpus_per_node: 8}\nduration: 3h\nstep: 15s\n"
                        "workloads: []\nserving:\n  replay: {requests: requests.csv, coldstarts: loads.csv, "
                        "max_replicas: 4}\n")
    report = run_live(LiveInputs(scenario, history_s=2 * 3600.0))
    live, reactive = report["live"], report["offline"]["reactive"]
    in_span = sum(1 for at, _, _ in rows if 2 * 3600 <= at < 3 * 3600)
    assert live["requests"] == reactive["requests"] == in_span  # every request of the span was served live
    assert report["cycles"] == 240
    # reactive lets the replica go after 300 s idle, so nearly every request waits for a model load
    assert reactive["share_wait_over_5s"] >= 0.8
    # gpuops learned the gaps from its history and keeps one replica warm: one GPU for the hour, and for each
    # request at most a spare that loads (40 s), is held for the scale-down cool-down and goes within a cycle
    assert live["share_wait_over_5s"] <= 0.2, report
    spare_s = 40.0 + report["scale_down_cooldown_s"] + 15.0
    assert 0.5 <= live["gpu_hours"] <= 1.0 + in_span * spare_s / 3600, report
    assert live["requests_interrupted"] == 0  # the spare a scale-down removes is the newest pod, idle here
    assert report["offline"]["gpuops"]["share_wait_over_5s"] <= 0.2, report


def test_a_scenario_without_a_replayed_trace_is_refused(tmp_path: Path) -> None:
    scenario = tmp_path / "plain.yaml"
    scenario.write_text("name: plain\nfleet: {nodes: 1, gpus_per_node: 8}\nduration: 1h\nworkloads: []\n")
    with pytest.raises(ValueError, match=r"has no `serving\.replay` of a request trace"):
        run_live(LiveInputs(scenario, history_s=600.0))


def test_the_command_prints_live_against_offline(tmp_path: Path) -> None:
    write_requests(tmp_path / "requests.csv", [(i * 60.0, 20.0, "M0001") for i in range(60)])
    scenario = tmp_path / "served.yaml"
    scenario.write_text("name: served\nfleet: {nodes: 1, gpus_per_node: 8}\nduration: 1h\nworkloads: []\n"
                        "serving:\n  replay: {requests: requests.csv, max_replicas: 2}\n")
    group = click.Group("gpuops")
    autoscale_command.register(group)
    result = CliRunner().invoke(group, ["autoscale", "live", "--scenario", str(scenario), "--history", "30m",
                                        "--live", "15m"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("served: 1 Deployments, 0.5 h of history, 0.25 h live (60 cycles")
    assert [line.split()[0] for line in lines[2:5]] == ["gpuops", "gpuops", "reactive"]
    assert "(live)" in lines[2] and "(offline)" in lines[3] and "(offline)" in lines[4]
    assert lines[-1] == "requests a scale-down interrupted live: 0"
