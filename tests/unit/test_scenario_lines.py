"""A malformed scenario file is refused naming the file, the line and the field, and nothing is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.scenario import ScenarioError
from simulator.scenario_files import load_scenario

GOOD = """\
name: lines
seed: 1
fleet: {nodes: 4, gpus_per_node: 8, gpu_model: H100 80GB}
duration: 1h
step: 15s
faults:
  - {kind: xid79, node: gpu-node-002, gpu: 3, at: 20m}
  - kind: straggler
    node: gpu-node-003
    gpu: 1
    at: 30m
approval: auto_approve
"""


@pytest.mark.parametrize(("old", "new", "line", "field"), [
    ("at: 20m}", "at: 20q}", 7, "faults.0.at"),
    ("    gpu: 1\n", "    gpu: one\n", 10, "faults.1.gpu"),
    ("step: 15s", "step: soon", 5, "step"),
    ("approval: auto_approve", "approval: maybe", 12, "approval"),
    ("seed: 1\n", "seed: 1\ncolour: blue\n", 3, "colour"),
])
def test_the_error_names_the_file_the_line_and_the_field(tmp_path: Path, old: str, new: str, line: int,
                                                          field: str) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert str(path) in message and f"line {line}: {field}:" in message, message


def test_the_good_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(GOOD)
    assert [f.kind for f in load_scenario(path).faults] == ["xid79", "straggler"]


@pytest.mark.parametrize(("old", "new", "hint"), [
    ("duration: 1h", "duratoin: 1h", "line 4: duratoin: Extra inputs are not permitted (did you mean 'duration'?)"),
    ("gpus_per_node: 8", "gpu_per_node: 8", "(did you mean 'gpus_per_node'?)"),
    ("seed: 1\n", "seed: 1\nnodes: 4\n", "'nodes' belongs at fleet.nodes or workloads[].nodes"),
    ("gpus_per_node: 8", "gpus_per_node: 8, seed: 2", "'seed' belongs at the top level"),
    ("seed: 1\n", "seed: 1\ncolour: blue\n", "line 3: colour: Extra inputs are not permitted\n"),
])
def test_an_unknown_key_is_told_where_such_a_field_belongs_or_what_it_looks_like(
        tmp_path: Path, old: str, new: str, hint: str) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert hint in str(caught.value) + "\n", caught.value
