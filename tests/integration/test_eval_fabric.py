"""`gpuops eval` on the fabric scenario of the library: every fabric fault kind detected at its onset; a node
whose link is down or whose HCA is lost cordoned, drained and ticketed (the ticket naming the HCA and port), then
returned under the taint that keeps multi-node work off it while its port waits for repair; a slow link
(degraded, symbol errors) ticketed first and its job moved where policy lets it; policy's budget of nodes out
holding (a further node fault waits, or goes to a human); and the leaf-switch event one escalated fleet incident
with no node action."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from entrypoints.cli import cli
from gpuops.policy import PolicyConfig

SCENARIO = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "fabric.yaml"
LEAF = ("gpu-node-010", "gpu-node-011", "gpu-node-012")


def test_fabric_faults_are_handled_and_a_leaf_event_escalates(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", "--scenario", str(SCENARIO), "--out", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    faults = {(f["kind"], f["node"]): f for f in report["faults"]}
    assert all(f["detected"] and f["time_to_detect_s"] <= 30 for f in faults.values()), faults
    returned = ["cordon_node", "drain_node", "open_hardware_ticket", "uncordon_node"]
    first = faults[("ib_link_down", "gpu-node-002")]
    assert first["runbook_executed"] == returned and first["verified"] is True
    # The later node faults may meet a spent budget or a common cause (which depends on when each proposal
    # falls): each is remediated in full, or goes to a human with the policy rule that stopped it.
    later = [faults[k] for k in (("ib_link_flap", "gpu-node-004"), ("nic_lost", "gpu-node-008"))]
    remediated = [f for f in later if f["runbook_executed"] == returned]
    assert remediated and all(f["verified"] for f in remediated)
    reasons = {i["id"]: i["reason"] for i in report["incidents"]}
    for f in later:
        if f not in remediated:
            assert f["incident_status"] == "escalated" and not f["runbook_executed"]
            assert any(rule in reasons[f["incident_id"]] for rule in ("common cause", "budget", "escalated")), f
    for slow in (faults[("ib_link_degraded", "gpu-node-005")], faults[("ib_symbol_errors", "gpu-node-006")]):
        assert slow["runbook_executed"] in (["open_hardware_ticket"], ["open_hardware_ticket", "reschedule_pods"],
                                            ["open_hardware_ticket", "reschedule_pods", "uncordon_node"])
        if slow["runbook_executed"] == ["open_hardware_ticket"] and slow["incident_status"] == "escalated":
            assert "budget" in reasons[slow["incident_id"]], slow  # the move policy refused goes to a human
    for node in LEAF:
        assert not faults[("ib_link_down", node)]["runbook_executed"]
    targets = {t for a in report["actions"] for t in a["targets"]}
    assert not targets & {f"node/{n}" for n in LEAF}
    (fleet,) = [i for i in report["incidents"] if i["scope"] == "fleet"]
    assert fleet["kind"] == "fabric" and fleet["status"] == "escalated"
    # The budget of nodes out at once holds, each node counted from gpuops taking it out to its return.
    limit = PolicyConfig().nodes_out_limit(12)
    out: dict[str, list[str]] = {}
    for a in sorted(report["actions"], key=lambda a: a["executed_at"] or ""):
        node = a["targets"][0]
        if a["runbook"] in ("cordon_node", "drain_node", "reschedule_pods") and node not in out:
            out[node] = [a["executed_at"], "~"]  # "~" sorts after every timestamp: still out at the end
        elif a["runbook"] == "uncordon_node":
            out[node][1] = a["executed_at"]
    assert out and max(sum(1 for s, e in out.values() if s <= at < e) for at, _ in out.values()) <= limit
    summary = report["summary"]
    assert summary["false_incidents"] == 0 and summary["unsafe_actions"]["executed"] == 0
