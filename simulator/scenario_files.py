"""Scenario files: read, validate, and check every fault's parameters by building the faults once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.faults import build_faults
from simulator.scenario import Scenario, ScenarioError, read_scenario_data, scenario_from_dict


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file, fault parameters included."""
    scenario = scenario_from_dict(read_scenario_data(path), source=str(path))
    check_fault_params(scenario, source=str(path))
    return scenario


def check_fault_params(scenario: Scenario, source: str = "scenario") -> None:
    """Build the scenario's faults once, so a bad parameter value is refused naming the fault and parameter."""
    try:
        build_faults(scenario, scenario.start, np.random.default_rng(scenario.seed))
    except ValueError as exc:
        raise ScenarioError(f"{source} is not a valid scenario:\n  {exc}") from exc
