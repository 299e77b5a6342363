"""A fault on a part that carries no work (a port no job crosses) has no work to take off it: gpuops' cordon,
keeping new work off until the repair, mitigates it. Where the part carries work, a cordon alone does not."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from evaluation.report import _outcome, _ts
from simulator.scenario import scenario_from_dict

SCENARIO = scenario_from_dict({"name": "t", "fleet": {"nodes": 3, "gpus_per_node": 4}, "duration": "2h",
                               "step": "15s", "workloads": []})
FAULT = {"kind": "nic_lost", "node": "gpu-node-002", "gpu": None, "onset": "2026-01-01T00:30:00Z",
         "failure_at": None, "cleared_at": None}


def _run(*runbooks: str) -> Any:
    at = _ts(FAULT["onset"]) + 60
    incident = {"id": 1, "parent_id": None, "family": "fabric", "scope": "node", "hostname": "gpu-node-002",
                "gpu": None, "status": "resolved", "opened_at": at, "updated_at": at + 600, "details": {}}
    actions = [{"id": n, "incident_id": 1, "runbook": r, "status": "succeeded", "executed_at": at + 10 * n,
                "verified_at": at + 10 * n + 5, "targets": ["node/gpu-node-002"]} for n, r in enumerate(runbooks, 1)]
    return SimpleNamespace(incidents=[incident], actions=actions, audit=[])


def test_a_cordon_mitigates_a_fault_on_a_part_with_no_work() -> None:
    detected = _ts(FAULT["onset"]) + 30
    got = _outcome(SCENARIO, _run("cordon_node", "open_hardware_ticket"), FAULT, detected, idle=True)
    assert got.incident_id == 1 and got.mitigated == _ts(FAULT["onset"]) + 60 + 15 and got.handed is None
    # where the part carries work, the cordon leaves it running on the fault: only a drain mitigates
    assert _outcome(SCENARIO, _run("cordon_node", "open_hardware_ticket"), FAULT, detected).mitigated is None
    drained = _outcome(SCENARIO, _run("cordon_node", "drain_node", "open_hardware_ticket"), FAULT, detected)
    assert drained.mitigated == _ts(FAULT["onset"]) + 60 + 25
