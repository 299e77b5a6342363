"""A fault on a GPU of a node gpuops had already drained (a second GPU failing while the node waits for its
repair) ran no work: the evaluation counts it contained at its onset, not lost until the end of the run. And the
report counts escalations by the policy rule that made them."""

from __future__ import annotations

from typing import Any

from evaluation.report import _drained_by_gpuops, escalated_by_rule


def action(runbook: str, node: str, at: float, status: str = "succeeded") -> dict[str, Any]:
    return {"runbook": runbook, "targets": [f"node/{node}"], "executed_at": at, "status": status}


def test_a_node_is_held_out_from_gpuops_drain_until_its_uncordon() -> None:
    run = [action("cordon_node", "n1", 90.0), action("drain_node", "n1", 100.0), action("uncordon_node", "n1", 500.0),
           action("drain_node", "n2", 100.0, status="failed")]
    assert not _drained_by_gpuops(run, "n1", 95.0)      # cordoned only: its pods still run
    assert _drained_by_gpuops(run, "n1", 300.0)          # drained and not back yet
    assert not _drained_by_gpuops(run, "n1", 600.0)      # back in service
    assert not _drained_by_gpuops(run, "n2", 300.0)      # the drain failed: work still ran there
    assert not _drained_by_gpuops(run, "n3", 300.0)      # gpuops never touched it


def test_escalations_are_counted_by_the_policy_rule_that_made_them() -> None:
    incidents = [{"status": "escalated", "reason": r} for r in (
        "proposal denied: budget: 72 healthy GPUs would remain, minimum 77",
        "proposal denied: cool-down: gpu-node-006 had action 48 at 2026-01-04",
        "proposal denied: budget: 1 node(s) already out, limit 1",
        "action 4 (cordon_node): escalated: common cause suspected: fabric also on gpu-node-009 within 900s",
        "fleet-wide event: escalated to a human, no node actions",
        "action 15 refused: policy at execution time: budget: 1 node(s) already out, limit 1 (2 or 10% of 12)",
        "gpu-node-011 stays out of service: probation failed: no_new_errors: new hardware findings since the "
        "remediation: nvlink on GPU 3 at 2026-01-01T01:51:15+00:00",
        "node-b7 stays out of service: probation failed: no_new_errors: xid on GPU 1",
        "approval of action 1 expired", "approval of action 12 expired",
        "plan rejected by alice: scenario approval: auto_reject",
        "action 2 rolled_back: not verified: drain_node stopped at evict: 1 pod(s) still blocked by a "
        "PodDisruptionBudget after 900s",
        "action 61 (cordon_node): escalated: repeat_limit: gpu-node-014 was remediated for 2 other incidents within "
        "7 days: a human decides")] + [{"status": "resolved", "reason": "fixed"}]
    assert escalated_by_rule(incidents) == {
        "proposal denied: budget": 2, "approval expired": 2, "probation failed: no_new_errors": 2,
        "action rolled_back: not verified: drain_node stopped at evict": 1, "common cause suspected": 1,
        "fleet-wide event": 1, "plan rejected": 1, "proposal denied: cool-down": 1,
        "refused at execution: budget": 1, "repeat_limit": 1}
