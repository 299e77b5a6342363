"""When the agent narrows a plan to the failing GPU alone (`agent.nodes._gpu_only`): only after the budgets alone
(the healthy-GPU floor, the nodes-out budget, or both) refused the plan's first node action, for a one-GPU fault
that has a GPU-only plan, once."""

from __future__ import annotations

from typing import Any

import pytest

from agent.actions import PlannedAction
from agent.nodes import _gpu_only
from agent.state import IncidentState

INCIDENT = {"id": 7, "family": "ecc", "hostname": "gpu-node-005", "gpu": 2, "title": "SBE storm", "evidence": {}}
FLOOR = "budget: 19 healthy GPUs would remain, minimum 20"
NODES_OUT = "budget: 1 node(s) already out, limit 1 (2 or 10% of 6)"


def _state(fault: str = "ecc_sbe_storm", *, first: str = "drain_node", cursor: int = 0,
           **extra: Any) -> IncidentState:
    target = "node/gpu-node-005" if first != "reset_gpu" else "gpu/gpu-node-005/2"
    plan = [PlannedAction(first, {"reason": "r"}, (target,)).to_json(),
            PlannedAction("open_hardware_ticket", {"summary": "s"}, ("node/gpu-node-005",)).to_json()]
    return IncidentState(incident_id=7, incident=INCIDENT, fault=fault, plan=plan, cursor=cursor,
                         **extra)  # type: ignore[typeddict-item]


def _denied(*reasons: str, after: int = 19, minimum: int = 20, nodes_after: int = 1, limit: int = 1) -> dict[str, Any]:
    return {"action_id": 3, "status": "denied", "reasons": list(reasons),
            "verdict": {"budget": {"healthy_gpus_after": after, "min_healthy_gpus": minimum,
                                   "nodes_out_after": nodes_after, "nodes_out_limit": limit}}}


def test_the_floor_alone_narrows_a_one_gpu_faults_plan_to_its_gpu() -> None:
    narrowed = _gpu_only(_state(), _denied(FLOOR))
    assert narrowed is not None
    assert [(a.runbook, a.targets) for a in narrowed] == [("isolate_gpu", ("gpu/gpu-node-005/2",)),
                                                          ("open_hardware_ticket", ("node/gpu-node-005",))]
    assert narrowed[1].params["gpu"] == 2
    reset = _gpu_only(_state("gsp_timeout", first="cordon_node"), _denied(FLOOR))
    assert reset is not None and [a.runbook for a in reset] == ["reset_gpu"]


@pytest.mark.parametrize("reasons", [(NODES_OUT,), (NODES_OUT, FLOOR)])
def test_a_spent_nodes_out_budget_narrows_it_too(reasons: tuple[str, ...]) -> None:
    """Someone else's cordons spend the nodes-out budget: the failing GPU still leaves service on its own."""
    narrowed = _gpu_only(_state(), _denied(*reasons, after=21, nodes_after=2))
    assert narrowed is not None and [a.runbook for a in narrowed] == ["isolate_gpu", "open_hardware_ticket"]
    reset = _gpu_only(_state("xid48_dbe", first="cordon_node"), _denied(*reasons, nodes_after=2))
    assert reset is not None and [(a.runbook, a.targets) for a in reset] == [("reset_gpu", ("gpu/gpu-node-005/2",))]


@pytest.mark.parametrize(("state", "proposal"), [
    (_state(), _denied("freeze window until 2026-06-01T13:00:00+00:00: upgrade")),
    (_state(), _denied(NODES_OUT, "cool-down: gpu-node-005 had action 2 at 2026-06-01 12:00:00+00:00")),
    (_state(), {**_denied(FLOOR), "status": "escalated"}),           # a human decides: never narrowed around it
    (_state(cursor=1), _denied(FLOOR)),                              # part of the plan ran already
    (_state(gpu_only=True), _denied(FLOOR)),                         # narrowed once already
    (_state("xid79", first="cordon_node"), _denied(FLOOR)),          # a GPU off the bus: no GPU-only plan
    (_state("nvlink_degradation", first="cordon_node"), _denied(FLOOR)),  # the NVLink fabric is the node's
    (_state(first="reset_gpu"), _denied(FLOOR)),                     # a GPU action already
])
def test_nothing_else_narrows_a_plan(state: IncidentState, proposal: dict[str, Any]) -> None:
    assert _gpu_only(state, proposal) is None


def test_a_node_wide_incident_with_no_one_gpu_is_not_narrowed() -> None:
    state = _state()
    state["incident"] = {**INCIDENT, "gpu": None}
    assert _gpu_only(state, _denied(FLOOR)) is None
