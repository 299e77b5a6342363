"""Investigation tools return typed results (ok, error, no data), never raise, and stay bounded; routers raise
on impossible states."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from agent.context import AgentContext
from agent.fencing import fence
from agent.graph import ImpossibleState, after_approval, after_policy, after_verify
from agent.tools import TOOLS, run_tool
from connectors.kubernetes.errors import ClusterError
from connectors.telemetry import InMemoryTelemetry
from detectors.frame import FleetFrame, GpuLabels
from tests.agent.world import build_context
from tests.unit.test_agent_rules import snapshot


def context(tmp_path: Path, **kw: Any) -> AgentContext:
    return build_context(SimpleNamespace(uow=None), tmp_path / "journal", **kw)  # type: ignore[arg-type]


def telemetry() -> InMemoryTelemetry:
    """The quarter hour before the test incident opened (the window the tool looks at)."""
    t = float(snapshot("thermal")["opened_ts"]) - 900 + 15 * np.arange(61, dtype=np.float64)
    hosts = tuple(["gpu-node-003"] * 4)
    temp = np.vstack([np.full(61, 60.0), np.full(61, 61.0), np.linspace(60, 95, 61), np.full(61, 59.0)])
    labels = GpuLabels(hostname=hosts, gpu=(0, 1, 2, 3), uuid=("a", "b", "c", "d"), model_name=("H100",) * 4)
    return InMemoryTelemetry(FleetFrame(t, labels, {"DCGM_FI_DEV_GPU_TEMP": temp}))


def test_gpu_metrics_compare_the_gpu_with_its_node_peers(tmp_path: Path) -> None:
    result = run_tool(context(tmp_path, telemetry=telemetry()), snapshot("thermal"), "gpu_metrics")
    assert result.status == "ok" and "max temperature 95" in result.summary
    assert result.data["gpus"]["2"]["DCGM_FI_DEV_GPU_TEMP"]["max"] == pytest.approx(95.0)
    assert result.data["node_peers_median_last"]["DCGM_FI_DEV_GPU_TEMP"] == pytest.approx(60.0)


def test_results_are_typed_never_raised(tmp_path: Path) -> None:
    bare = context(tmp_path)
    bare.cluster, bare.xid = None, None
    assert run_tool(bare, snapshot("thermal"), "gpu_metrics").status == "error"       # no telemetry port
    assert run_tool(bare, snapshot("thermal"), "node_conditions").status == "error"   # no cluster port
    assert run_tool(bare, snapshot("xid", evidence={"xid": 79}), "xid_catalogue").status == "error"
    assert run_tool(bare, snapshot("thermal"), "no_such_tool").status == "error"
    fleet = {**snapshot("anomaly", gpu=None), "hostname": None, "scope": "fleet"}
    assert run_tool(context(tmp_path), fleet, "pods_on_node").status == "no_data"
    assert run_tool(context(tmp_path), snapshot("thermal"), "xid_catalogue").status == "no_data"
    assert run_tool(context(tmp_path), snapshot("xid", evidence={"xid": 79}), "xid_catalogue").status == "ok"


def test_a_failing_port_is_an_error_result(tmp_path: Path) -> None:
    ctx = context(tmp_path)

    def broken(name: str) -> Any:
        raise ClusterError("the API server answered 503")

    ctx.cluster.get_node = broken  # type: ignore[method-assign,union-attr]
    result = run_tool(ctx, snapshot("thermal"), "node_conditions")
    assert result.status == "error" and "503" in result.summary


def test_the_catalogue_tools_answer(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    runbooks = run_tool(ctx, snapshot("thermal"), "runbook_catalogue")
    assert runbooks.status == "ok" and {"cordon_node", "drain_node"} <= {r["name"] for r in runbooks.data}
    node = run_tool(ctx, snapshot("thermal"), "node_conditions")
    assert node.status == "ok" and "conditions healthy" in node.summary
    assert set(TOOLS) >= {"gpu_metrics", "pods_on_node", "node_conditions", "incident_history", "xid_catalogue",
                          "runbook_catalogue"}


def test_large_output_is_summarised_within_the_bound() -> None:
    pods = [{"name": f"pod-{i}", "annotations": {"log": "x" * 5000}} for i in range(500)]
    fenced = fence("pods_on_node", "ok", "500 pods", pods, max_chars=2000)
    assert len(fenced) < 2200 and "more items" in fenced
    huge = fence("pods_on_node", "ok", "500 pods", [{"k" * 300: "v"} for _ in range(5000)], max_chars=300)
    assert len(huge) < 600 and "omitted" in huge


def test_routers_raise_on_impossible_states(tmp_path: Path) -> None:
    runtime = SimpleNamespace(context=context(tmp_path))
    with pytest.raises(ImpossibleState):
        after_policy({"proposal": {"status": "teleported", "action_id": 1}}, runtime)  # type: ignore[arg-type]
    with pytest.raises(ImpossibleState):
        after_policy({"proposal": {"status": "approved", "action_id": None}}, runtime)  # type: ignore[arg-type]
    with pytest.raises(ImpossibleState):
        after_approval({"approval": "banana", "steps": 1}, runtime)  # type: ignore[arg-type]
    with pytest.raises(ImpossibleState):
        after_verify({"cursor": 5, "plan": [{}], "steps": 1}, runtime)  # type: ignore[arg-type]


def test_the_step_limit_escalates_instead_of_looping(tmp_path: Path) -> None:
    runtime = SimpleNamespace(context=context(tmp_path, max_steps=10))
    waiting = {"approval": "awaiting_approval", "steps": 10}
    assert after_approval(waiting, runtime) == "escalate"  # type: ignore[arg-type]
    assert after_approval({**waiting, "steps": 3}, runtime) == "await_approval"  # type: ignore[arg-type]
