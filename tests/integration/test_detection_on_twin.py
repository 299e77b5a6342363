"""The detectors and the incident service on the twin, in process: abrupt faults become incidents within two
scrape steps; a quiet fleet opens none."""

from __future__ import annotations

from evaluation.detection import evaluate_detection
from simulator.scenario import scenario_from_dict

FLEET = {"nodes": 4, "gpus_per_node": 8, "gpu_model": "H100 80GB"}


def test_abrupt_faults_are_found_within_two_steps_and_become_incidents() -> None:
    scenario = scenario_from_dict({
        "name": "abrupt", "seed": 5, "fleet": FLEET, "duration": "45m", "step": "15s",
        "faults": [{"kind": "xid79", "node": "gpu-node-002", "gpu": 6, "at": "20m"},
                   {"kind": "gsp_timeout", "node": "gpu-node-004", "gpu": 1, "at": "30m"}],
        "approval": "auto_approve"})
    result = evaluate_detection(scenario)
    assert result["detection"]["abrupt_recall_within_two_steps"] == 1.0
    assert result["incidents"] >= 2
    assert result["false_incidents"] == 0


def test_a_quiet_fleet_opens_no_incident() -> None:
    scenario = scenario_from_dict({"name": "quiet", "seed": 11, "fleet": FLEET, "duration": "45m", "step": "15s",
                                   "faults": [], "approval": "auto_approve"})
    result = evaluate_detection(scenario)
    assert result["incidents"] == 0, result["false_incident_kinds"]
