"""The twin's inference Deployments driven by a recorded request trace (`serving.replay`, GenTD26's format): one
Deployment per base model, every request at its recorded time (shifted to the twin's clock) for its recorded GPU
time, every replica's model load drawn from the recorded loads; a malformed trace is refused naming the file,
the line and the field, and nothing is half-loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.scenario import ScenarioError
from simulator.scenario_files import load_scenario
from simulator.serving import deployment_name
from simulator.twin import Twin
from tests.unit.autoscale_traces import write_cold_starts, write_requests

ROWS = [(0.0, 20.0, "M0001"), (3600.0, 30.0, "M0002"), (3700.0, 12.0, "M0002"), (3800.0, 8.0, "M0002"),
        (7300.0, 40.0, "M0001"), (90000.0, 5.0, "M0001")]


def write_scenario(tmp_path: Path, replay: str, duration: str = "3h") -> Path:
    path = tmp_path / "served.yaml"
    path.write_text(f"name: served\nfleet: {{nodes: 1, gpus_per_node: 8}}\nduration: {duration}\nstep: 15s\n"
                    f"workloads: []\nserving:\n  replay:\n{replay}")
    return path


def test_each_base_model_is_a_deployment_fed_its_recorded_requests(tmp_path: Path) -> None:
    write_requests(tmp_path / "requests.csv.gz", ROWS)
    scenario = load_scenario(write_scenario(tmp_path, "    requests: requests.csv.gz\n    skip: 1h\n"))
    twin = Twin(scenario)
    assert twin.serving is not None
    servers = twin.serving.servers
    assert set(servers) == {"sd-m0001", "sd-m0002"}
    # the trace's first arrival plus `skip` is the twin's start; only the 3 h from there are replayed
    assert list(servers["sd-m0002"].arrivals - twin.start) == [0.0, 100.0, 200.0]
    assert list(servers["sd-m0002"].service_times) == [30.0, 12.0, 8.0]
    assert list(servers["sd-m0001"].arrivals - twin.start) == [3700.0]
    dep = twin.kube.get_object("deployments", "serving", "sd-m0002")
    assert dep["metadata"]["labels"]["gpuops.io/autoscale"] == "true"
    assert dep["metadata"]["annotations"]["gpuops.io/max-replicas"] == "8"


def test_a_replayed_request_is_served_for_its_recorded_time_once_a_replica_has_loaded(tmp_path: Path) -> None:
    write_requests(tmp_path / "requests.csv", ROWS)
    write_cold_starts(tmp_path / "loads.csv", [33000.0])  # every load takes 33 s
    scenario = load_scenario(write_scenario(
        tmp_path, "    requests: requests.csv\n    coldstarts: loads.csv\n    skip: 1h\n    min_replicas: 1\n"))
    twin = Twin(scenario)
    assert twin.serving is not None
    twin.advance_to(twin.start + 30)
    assert twin.serving.servers["sd-m0002"].replicas == {}  # still loading its model
    twin.advance_to(twin.start + 300)
    server = twin.serving.servers["sd-m0002"]
    # loaded at 33 s (seen at the twin's next 15 s step): the first request (t=0) waits for the load, the
    # others find the replica free
    waits = [w for _, w in server.waits]
    assert 33 <= waits[0] <= 33 + 15 and waits[1:] == [0.0, 0.0] and server.served == 3


def test_models_keeps_the_busiest_base_models_of_the_replayed_span(tmp_path: Path) -> None:
    write_requests(tmp_path / "requests.csv", ROWS)
    scenario = load_scenario(write_scenario(tmp_path, "    requests: requests.csv\n    models: 1\n"))
    twin = Twin(scenario)
    assert twin.serving is not None and set(twin.serving.servers) == {"sd-m0002"}


def test_recorded_loads_are_drawn_per_replica(tmp_path: Path) -> None:
    write_requests(tmp_path / "requests.csv", ROWS)
    write_cold_starts(tmp_path / "loads.csv", [10000.0, 60000.0])
    scenario = load_scenario(write_scenario(tmp_path, "    requests: requests.csv\n    coldstarts: loads.csv\n"))
    twin = Twin(scenario)
    twin.kube.set_scale("serving", "sd-m0001", 8)
    twin.advance_to(twin.t + 45)
    assert twin.serving is not None
    assert 0 < len(twin.serving.servers["sd-m0001"].replicas) < 8  # some loaded in 10 s, the rest take 60 s
    twin.advance_to(twin.t + 30)
    assert len(twin.serving.servers["sd-m0001"].replicas) == 8


@pytest.mark.parametrize(("replay", "message"), [
    ("    requests: missing.csv\n", r"missing\.csv: cannot read it"),
    ("    requests: requests.csv\n    skip: 30d\n", r"requests\.csv: no request in the replayed span"),
    ("    requests: requests.csv\n    coldstarts: bad_loads.csv\n", r"bad_loads\.csv, line 3, field 'value'"),
    ("    requests: bad.csv\n", r"bad\.csv, line 3, field 'exec_time_seconds': 'abc' is not a number"),
    ("    requests: requests.csv\n    models: 0\n", "models"),
])
def test_a_malformed_replay_is_refused_naming_the_file_line_and_field(tmp_path: Path, replay: str,
                                                                     message: str) -> None:
    write_requests(tmp_path / "requests.csv", ROWS)
    write_requests(tmp_path / "bad.csv", ROWS[:1],
                   extra=["2024-11-15 10:00:00,TXT_2_IMG,SUCCEED,abc,G0,1,,1,30,M0001,0"])
    (tmp_path / "bad_loads.csv").write_text("timestamp_anon,value,container_ip\n1,2000,a\n2,-5,b\n")
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write_scenario(tmp_path, replay))


def test_a_listed_model_may_not_take_a_replayed_deployments_name(tmp_path: Path) -> None:
    write_requests(tmp_path / "requests.csv", ROWS)
    path = tmp_path / "served.yaml"
    path.write_text("name: served\nfleet: {nodes: 1, gpus_per_node: 8}\nduration: 1h\nworkloads: []\nserving:\n"
                    "  models: [{name: sd-m0001}]\n  replay: {requests: requests.csv}\n")
    with pytest.raises(ScenarioError, match="sd-m0001 is both a listed model and a replayed base model"):
        load_scenario(path)


def test_deployment_names_are_valid_kubernetes_names() -> None:
    assert deployment_name("M0002") == "sd-m0002"
    assert deployment_name("SDXL_v1.0/base") == "sd-sdxl-v1-0-base"
    assert len(deployment_name("x" * 80)) == 50
    assert deployment_name("x" * 46 + "/y") == "sd-" + "x" * 46  # never ends in a dash
