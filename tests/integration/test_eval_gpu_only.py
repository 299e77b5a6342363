"""`gpuops eval`: a fleet one GPU short of its healthy-GPU floor's slack. A PCIe replay storm on one node is
drained, ticketed and fenced, so its node serves with three GPUs; then an SBE storm heads for a double-bit error on
another node, whose drain the floor refuses (four GPUs would leave, three may). The GPU alone leaves service
(`isolate_gpu`: its replica moves, the node agent fences it, the node serves on with its other GPUs) and is
ticketed, before the double-bit error. With fences off, the isolation is refused too and a human decides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from entrypoints.cli import cli

STORM = "gpu-node-005"


def _eval(tmp_path: Path, **policy: Any) -> dict[str, Any]:
    scenario, out, policy_file = tmp_path / "gpu-only.yaml", tmp_path / "out", tmp_path / "policy.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "gpu-only", "seed": 5, "fleet": {"nodes": 6, "gpus_per_node": 4}, "duration": "4h", "step": "60s",
        "workloads": [{"type": "inference", "name": "chat", "replicas": 16, "gpus_per_replica": 1}],
        "faults": [{"kind": "pcie_replay_storm", "node": "gpu-node-003", "gpu": 1, "at": "10m", "lead": "40m"},
                   {"kind": "ecc_sbe_storm", "node": STORM, "gpu": 0, "at": "90m", "lead": "100m",
                    "peak_sbe_per_min": 60}],
        "approval": "auto_approve",
    }))
    policy_file.write_text(yaml.safe_dump(policy))
    result = CliRunner().invoke(cli, ["eval", "--scenario", str(scenario), "--out", str(out)],
                                catch_exceptions=False, env={"GPUOPS_POLICY_FILE": str(policy_file)})
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def _storm(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    fault = next(f for f in report["faults"] if f["kind"] == "ecc_sbe_storm")
    incident = next(i for i in report["incidents"] if i["hostname"] == STORM)
    return fault, incident


def test_a_failing_gpu_whose_node_the_floor_keeps_in_leaves_service_alone(tmp_path: Path) -> None:
    report = _eval(tmp_path)
    on_storm = [a for a in report["actions"] if STORM in " ".join(a["targets"])]
    assert [(a["runbook"], a["targets"]) for a in on_storm] == [
        ("isolate_gpu", [f"gpu/{STORM}/0"]), ("open_hardware_ticket", [f"node/{STORM}"])], report["actions"]
    assert all(a["verified"] for a in on_storm)
    refused = [a for a in report["scenarios"][0]["not_executed"] if a["runbook"] == "drain_node"]
    assert [r for a in refused for r in a["reasons"]] == ["budget: 19 healthy GPUs would remain, minimum 20"]
    fault, incident = _storm(report)
    assert incident["status"] == "resolved" and fault["verified"]
    assert fault["gpu_hours_lost"]["gpuops"] < fault["gpu_hours_lost"]["no_automation"]
    assert len(report["incidents"]) == 2  # the double-bit error on the fenced GPU is filed with its incident
    assert report["scenarios"][0]["nodes_cordoned_at_end"] == []  # the storm's node never left service


def test_with_fences_off_the_gpu_is_not_isolated_and_a_human_decides(tmp_path: Path) -> None:
    report = _eval(tmp_path, fence_gpus=False)
    assert not [a for a in report["actions"] if STORM in " ".join(a["targets"])]
    fault, incident = _storm(report)
    assert incident["status"] == "escalated"
    assert "isolate_gpu fences a GPU off, and fences are off (fence_gpus: false)" in incident["reason"]
    assert fault["runbook_executed"] is None
