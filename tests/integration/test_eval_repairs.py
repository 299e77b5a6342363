"""`gpuops eval` with technicians: a node whose GPU's PCIe link keeps replaying (no remediation fixes it, and the
device plugin still gives the GPU out) is cordoned, drained and ticketed. With fences turned off it stays out while
nobody has repaired it, and returns to service through a fresh probation once the technicians have replaced it
(`repair_turnaround` after the ticket); without technicians it stays out to the end. With fences (the default) the
GPU is fenced off and the node returns at once with its other GPUs, and whole after the repair."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from entrypoints.cli import cli

NODE = "gpu-node-003"


def _scenario(tmp_path: Path, turnaround: str | None) -> Path:
    path = tmp_path / "repairs.yaml"
    path.write_text(yaml.safe_dump({
        "name": "repairs", "seed": 5, "fleet": {"nodes": 6, "gpus_per_node": 4}, "duration": "4h", "step": "60s",
        "workloads": [{"type": "inference", "name": "chat", "replicas": 6, "gpus_per_replica": 1}],
        "faults": [{"kind": "pcie_replay_storm", "node": NODE, "gpu": 1, "at": "10m", "lead": "40m"}],
        "approval": "auto_approve", "repair_turnaround": turnaround,
    }))
    return path


def _eval(tmp_path: Path, turnaround: str | None, **policy: Any) -> dict[str, Any]:
    out, policy_file = tmp_path / "out", tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    result = CliRunner().invoke(cli, ["eval", "--scenario", str(_scenario(tmp_path, turnaround)), "--out", str(out)],
                                catch_exceptions=False, env={"GPUOPS_POLICY_FILE": str(policy_file)})
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def test_a_fenced_gpu_leaves_its_node_serving_until_the_repair_brings_it_back(tmp_path: Path) -> None:
    report = _eval(tmp_path, "1h")
    actions = report["actions"]
    assert [a["runbook"] for a in actions] == ["cordon_node", "drain_node", "open_hardware_ticket", "fence_gpu",
                                               "uncordon_node"], actions
    assert all(a["verified"] for a in actions) and actions[3]["targets"] == [f"gpu/{NODE}/1"]
    assert report["scenarios"][0]["nodes_cordoned_at_end"] == []
    (incident,) = report["incidents"]
    assert incident["status"] == "resolved"  # the repair returned the GPU: no second ticket, no escalation


@pytest.mark.parametrize("turnaround", ["1h", None])
def test_a_ticketed_node_returns_only_after_the_technicians_repaired_it(tmp_path: Path,
                                                                        turnaround: str | None) -> None:
    report = _eval(tmp_path, turnaround, fence_gpus=False)
    runbooks = [a["runbook"] for a in report["actions"]]
    assert runbooks[:3] == ["cordon_node", "drain_node", "open_hardware_ticket"], runbooks
    (scenario,) = report["scenarios"]
    if turnaround is None:
        assert NODE in scenario["nodes_cordoned_at_end"] and "uncordon_node" not in runbooks
    else:
        assert NODE not in scenario["nodes_cordoned_at_end"]
        (uncordon,) = [a for a in report["actions"] if a["runbook"] == "uncordon_node"]
        (ticket,) = [a for a in report["actions"] if a["runbook"] == "open_hardware_ticket"]
        assert uncordon["verified"] and uncordon["executed_at"] > ticket["executed_at"]
