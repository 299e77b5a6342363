"""Scenario fields added for the evaluation: PodDisruptionBudgets on workloads, fault parameters checked at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.scenario import ScenarioError, scenario_from_dict
from simulator.scenario_files import load_scenario
from simulator.twin import Twin

BASE = {"name": "s", "fleet": {"nodes": 4, "gpus_per_node": 2}, "duration": "1h"}


def test_a_workload_with_max_unavailable_gets_a_disruption_budget() -> None:
    scenario = scenario_from_dict({**BASE, "workloads": [
        {"type": "training", "name": "job", "nodes": 2, "max_unavailable": 0},
        {"type": "inference", "name": "api", "replicas": 2}]})
    pdbs, _ = Twin(scenario).kube.list_objects("poddisruptionbudgets", None)
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pdbs] == [("training", "job-pdb")]
    assert pdbs[0]["spec"]["maxUnavailable"] == 0
    assert pdbs[0]["status"]["disruptionsAllowed"] == 0


def test_a_misspelt_fault_parameter_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"(?s)faults\.0.*unknown parameter\(s\) leed.*expected some of lead"):
        scenario_from_dict({**BASE, "faults": [{"kind": "xid79", "node": "gpu-node-001", "gpu": 0, "at": "5m",
                                                "leed": "1h"}]})


def test_a_bad_parameter_value_is_refused_when_the_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nfleet: {nodes: 2, gpus_per_node: 2}\nduration: 1h\n"
                    "faults:\n  - {kind: straggler, node: gpu-node-001, gpu: 0, at: 5m, slowdown: 7}\n")
    with pytest.raises(ScenarioError, match=r"(?s)s\.yaml.*faults\[0\] \(straggler\).*slowdown"):
        load_scenario(path)


def test_the_evaluation_planner_is_validated() -> None:
    with pytest.raises(ScenarioError, match="planner"):
        scenario_from_dict({**BASE, "planner": "gpt"})


@pytest.mark.parametrize(("written", "seconds"), [("42m55s", 2575.0), ("6h10m", 22200.0), ("1h20m30s", 4830.0),
                                                  ("1d2h", 93600.0), ("90s", 90.0), (600, 600.0)])
def test_durations_are_accepted_as_people_write_them(written: object, seconds: float) -> None:
    scenario = scenario_from_dict({**BASE, "duration": "2d", "faults": [
        {"kind": "xid79", "node": "gpu-node-001", "gpu": 0, "at": written}]})
    assert scenario.faults[0].at == seconds


@pytest.mark.parametrize("written", ["20m1h", "1h1h", "1h 20m", "m", "10x"])
def test_a_garbled_duration_is_refused_saying_what_is_expected(written: str) -> None:
    with pytest.raises(ScenarioError, match=r"1h20m30s"):
        scenario_from_dict({**BASE, "faults": [{"kind": "xid79", "node": "gpu-node-001", "gpu": 0, "at": written}]})


@pytest.mark.parametrize("written", ["H100", "h100 80gb", "H100 80GB", "NVIDIA H100 80GB HBM3",
                                     "NVIDIA  H100 80GB HBM3"])
def test_gpu_models_are_accepted_by_the_names_people_use(written: str) -> None:
    scenario = scenario_from_dict({**BASE, "fleet": {"nodes": 1, "gpus_per_node": 1, "gpu_model": written}})
    assert scenario.fleet.gpu_model == "H100 80GB"


def test_an_unsimulated_gpu_model_is_refused_naming_what_is() -> None:
    with pytest.raises(ScenarioError, match=r"'A100' is not simulated.*H100 80GB"):
        scenario_from_dict({**BASE, "fleet": {"nodes": 1, "gpus_per_node": 1, "gpu_model": "A100"}})
