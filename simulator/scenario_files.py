"""Scenario files: read, validate, and check every fault's parameters by building the faults once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simulator.faults import build_faults
from simulator.replay import check_replay_room, resolve_replay
from simulator.scenario import LineMap, Scenario, ScenarioError, read_scenario_data, scenario_from_dict, yaml_lines
from simulator.serving import check_names, replayed_deployments, resolve_serving_paths


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file, fault parameters and replay recordings included."""
    path = Path(path)
    data = read_scenario_data(path)
    return scenario_from_file_data(data, source=str(path), folder=path.parent,
                                   lines=yaml_lines(path.read_text(encoding="utf-8")))


def scenario_from_file_data(data: Any, source: str, folder: Path, lines: LineMap | None = None) -> Scenario:
    """Validate a scenario file's parsed YAML whole: replay paths are relative to `folder` (the file's), the
    recordings and a served request trace are read and checked line by line, `duration: trace` takes their
    length, every recorded pod must have a GPU, and fault parameters must build. Nothing is half-loaded: any
    problem is a ScenarioError."""
    try:
        data = resolve_replay(resolve_serving_paths(data, folder), folder)
    except ScenarioError as exc:
        raise ScenarioError(f"{source} is not a valid scenario:\n  {exc}") from exc
    scenario = scenario_from_dict(data, source=source, lines=lines)
    try:
        check_replay_room(scenario)
        if scenario.serving is not None and scenario.serving.replay is not None:
            check_names(scenario.serving, replayed_deployments(scenario.serving.replay, scenario.start,
                                                               scenario.start + scenario.duration))
    except (ScenarioError, ValueError) as exc:
        raise ScenarioError(f"{source} is not a valid scenario:\n  {exc}") from exc
    check_fault_params(scenario, source=source)
    return scenario


def check_fault_params(scenario: Scenario, source: str = "scenario") -> None:
    """Build the scenario's faults once, so a bad parameter value is refused naming the fault and parameter."""
    try:
        build_faults(scenario, scenario.start, np.random.default_rng(scenario.seed))
    except ValueError as exc:
        raise ScenarioError(f"{source} is not a valid scenario:\n  {exc}") from exc
