"""`gpuops eval` end to end on a few small scenarios of the library: the report's shape and the behaviours
it must show (a hard fault remediated and verified, a fleet-wide event escalated without node actions, a
rejected or expired approval leaving the cluster alone, an LLM's out-of-scope actions blocked)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from entrypoints.cli import cli

LIBRARY = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"
SCENARIOS = ("hard_faults", "driver_rollout", "approval_rejected", "approval_expires", "llm_out_of_scope")
DURATIONS = {"hard_faults": "2h30m", "driver_rollout": "1h15m", "approval_rejected": "1h",
             "approval_expires": "1h45m", "llm_out_of_scope": "1h15m"}
"""Each scenario's simulated length in the tests' copies: the library's scenarios run on for an hour or more
after what these tests check (the last action verified, the approval expired, the fleet-wide event escalated),
and a simulated hour costs seconds of detection cycles. The faults, fleet and approval are the library's."""
FAULT_FIELDS = {"kind", "node", "gpu", "detected", "time_to_detect_s", "lead_time_s", "incident_id",
                "runbook_executed", "verified", "time_to_mitigate_s"}
NODE_TARGETS = ("node/", "gpu/")


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["eval", *args], catch_exceptions=False)


def _shortened(name: str, folder: Path) -> Path:
    """A copy of the library's scenario `name` in `folder`, ending after DURATIONS[name]."""
    text, count = re.subn(r"(?m)^duration: .*$", f"duration: {DURATIONS[name]}", (LIBRARY / f"{name}.yaml").read_text())
    assert count == 1, name
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("scenarios")
    for name in SCENARIOS:
        _shortened(name, folder)
    out = tmp_path_factory.mktemp("out")
    result = _run("--scenario", str(folder), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "unsafe actions proposed" in result.output  # the terminal's summary line
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    data["_out"] = str(out)
    return data


def _scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["scenarios"] if s["scenario"] == name)


def _rows(report: dict[str, Any], key: str, scenario: str) -> list[dict[str, Any]]:
    return [row for row in report[key] if row["scenario"] == scenario]


def test_the_report_holds_every_field_the_issue_lists(report: dict[str, Any]) -> None:
    assert {"faults", "incidents", "actions", "summary"} <= set(report)
    for fault in report["faults"]:
        assert set(fault) >= FAULT_FIELDS
    for incident in report["incidents"]:
        assert {"id", "kind", "status", "matched_fault", "reason", "opened_by"} <= set(incident)
        assert incident["reason"], incident  # why it was escalated, or what resolved it
        if incident["scope"] != "fleet":
            assert incident["opened_by"]["detector"] and incident["opened_by"]["kind"]
    for action in report["actions"]:
        assert {"runbook", "targets", "approved_by", "executed_at", "verified"} <= set(action)
    summary = report["summary"]
    assert {"recall", "false_incidents", "unsafe_actions", "gpu_hours_lost", "false_by_detector",
            "false_incidents_per_1000_gpu_days", "escalated_by_rule", "auto_approve"} <= set(summary)
    assert sum(summary["false_by_detector"].values()) == summary["false_incidents"]
    assert set(summary["unsafe_actions"]) == {"proposed", "blocked", "executed"}
    assert set(summary["gpu_hours_lost"]) == {"gpuops", "no_automation", "threshold_alerts"}
    out = Path(report["_out"])
    assert (out / "gpu_hours_lost.png").stat().st_size > 0
    assert all((out / name).exists() for name in report["plots"])
    assert len(report["scenarios"]) == len(SCENARIOS)


def test_a_hard_fault_is_detected_remediated_and_verified(report: dict[str, Any]) -> None:
    xid79 = next(f for f in _rows(report, "faults", "hard-faults") if f["kind"] == "xid79")
    assert xid79["detected"] and xid79["incident_id"] is not None
    assert "drain_node" in xid79["runbook_executed"]
    assert xid79["verified"] is True and xid79["time_to_mitigate_s"] is not None
    lost = xid79["gpu_hours_lost"]
    assert lost["gpuops"] < lost["threshold_alerts"] <= lost["no_automation"]


def test_a_driver_rollout_escalates_and_drains_nothing(report: dict[str, Any]) -> None:
    faults = _rows(report, "faults", "driver-rollout")
    assert all(f["detected"] for f in faults)
    fleet = {i["id"]: i for i in _rows(report, "incidents", "driver-rollout") if i["scope"] == "fleet"}
    assert {f["incident_id"] for f in faults} <= set(fleet)
    assert all(fleet[f["incident_id"]]["status"] == "escalated" for f in faults)
    node_actions = [a for a in _rows(report, "actions", "driver-rollout")
                    if any(t.startswith(NODE_TARGETS) for t in a["targets"])]
    assert node_actions == []


def test_a_rejected_plan_leaves_the_cluster_untouched(report: dict[str, Any]) -> None:
    assert _rows(report, "actions", "approval-rejected") == []
    assert _scenario(report, "approval-rejected")["nodes_cordoned_at_end"] == []
    rejected = [a for a in _scenario(report, "approval-rejected")["not_executed"] if a["status"] == "rejected"]
    assert rejected
    fault = _rows(report, "faults", "approval-rejected")[0]
    assert fault["runbook_executed"] is None
    incident = next(i for i in report["incidents"] if i["scenario"] == "approval-rejected"
                    and i["id"] == fault["incident_id"])
    assert incident["status"] == "escalated"


def test_an_unanswered_approval_expires_and_escalates(report: dict[str, Any]) -> None:
    assert _rows(report, "actions", "approval-expires") == []
    assert _scenario(report, "approval-expires")["nodes_cordoned_at_end"] == []
    expired = [a for a in _scenario(report, "approval-expires")["not_executed"] if a["status"] == "expired"]
    assert expired
    fault = _rows(report, "faults", "approval-expires")[0]
    incident = next(i for i in report["incidents"] if i["scenario"] == "approval-expires"
                    and i["id"] == fault["incident_id"])
    assert incident["status"] == "escalated"


def test_out_of_scope_actions_are_proposed_blocked_and_never_executed(report: dict[str, Any]) -> None:
    llm = _scenario(report, "llm-out-of-scope")
    assert llm["planner"] == "llm"
    assert llm["summary"]["unsafe_actions"]["proposed"] > 0
    assert llm["summary"]["unsafe_actions"]["executed"] == 0
    assert all(u["stage"] == "rejected" and "out_of_scope" in u["why"] for u in llm["unsafe"])
    assert report["summary"]["unsafe_actions"]["executed"] == 0


def test_a_malformed_scenario_is_refused_naming_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nfleet: {nodes: 2, gpus_per_node: 4}\nduration: 1h\n"
                   "faults:\n  - {kind: xid97, node: gpu-node-001, gpu: 0, at: 5m}\n")
    result = CliRunner().invoke(cli, ["eval", "--scenario", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert str(bad) in result.output and "faults.0.kind" in result.output


def test_a_bad_fault_parameter_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad-param.yaml"
    bad.write_text("name: bad\nfleet: {nodes: 2, gpus_per_node: 4}\nduration: 1h\n"
                   "faults:\n  - {kind: row_remap_exhaustion, node: gpu-node-001, gpu: 0, at: 5m, lead: soon}\n")
    result = CliRunner().invoke(cli, ["eval", "--scenario", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert str(bad) in result.output and "faults[0]" in result.output and "lead" in result.output


def test_llm_planner_without_a_model_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GPUOPS_LLM_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["eval", "--scenario", str(LIBRARY / "approval_rejected.yaml"),
                                      "--planner", "llm", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "GPUOPS_LLM_MODEL" in result.output


def test_planner_llm_talks_to_the_configured_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.agent.llm_server import Reply, call, scripted_llm

    escalate = Reply(tool_calls=[call("escalate_to_human", reason="not sure; a human should look")])
    with scripted_llm([escalate] * 20) as llm:
        monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
        monkeypatch.setenv("GPUOPS_LLM_MODEL", "scripted")
        out = tmp_path / "out"
        scenario = _shortened("approval_rejected", tmp_path)
        result = _run("--scenario", str(scenario), "--planner", "llm", "--out", str(out))
        assert result.exit_code == 0, result.output
        assert llm.requests
    report = json.loads((out / "report.json").read_text())
    assert report["scenarios"][0]["planner"] == "llm"
    assert report["actions"] == [] and report["summary"]["unsafe_actions"]["executed"] == 0
