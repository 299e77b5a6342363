"""The capacity gpuops kept out of service, from the report's executed actions."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.report import held_out_gpu_hours

T0 = 1_767_225_600.0


def action(i: int, runbook: str, node: str, at_h: float, status: str = "succeeded") -> dict[str, Any]:
    return {"id": i, "runbook": runbook, "targets": [f"node/{node}"], "executed_at": T0 + at_h * 3600.0,
            "status": status}


def test_cordon_to_uncordon_or_the_runs_end_counts_the_nodes_gpus() -> None:
    actions = [
        action(1, "cordon_node", "gpu-node-001", 1.0),
        action(2, "drain_node", "gpu-node-001", 1.0),
        action(3, "uncordon_node", "gpu-node-001", 2.5),   # 1.5 h out
        action(4, "cordon_node", "gpu-node-002", 4.0),     # out to the end: 6 h
        action(5, "cordon_node", "gpu-node-002", 5.0),     # cordoned again while out: still one span
        action(6, "uncordon_node", "gpu-node-003", 3.0),   # a node gpuops never cordoned (a human's): nothing
        action(7, "cordon_node", "gpu-node-004", 3.0, status="failed"),
    ]
    assert held_out_gpu_hours(actions, T0 + 10 * 3600.0, 8) == pytest.approx(8 * (1.5 + 6.0))
    assert held_out_gpu_hours([], T0, 8) == 0.0
