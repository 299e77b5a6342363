"""The rules planner's table: each scenario fault kind, as its finding reaches the agent, maps to the expected
runbooks with targets inside the incident, and every action passes the catalogue's validation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.actions import PlannedAction
from agent.planning import PlanRequest
from agent.rules import RulesPlanner, fault_of
from agent.tools import ToolResult, agenda_for, run_tool
from agent.validation import check_action
from gpuops.incidents.agent_ports import snapshot_of
from gpuops.store.models import FindingRecord, Incident
from tests.agent.world import RUNBOOK_SETTINGS, build_context

RUNBOOK_BOUNDS = RUNBOOK_SETTINGS.replica_bounds["serve/chat"]

NODE = "gpu-node-003"


OPENED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def snapshot(family: str, gpu: int | None = 2, evidence: dict[str, Any] | None = None,
             details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state's incident as triage puts it there: the production snapshot of a real (unsaved) incident with
    one finding, so a change to the snapshot's shape reaches these tests."""
    incident = Incident(id=7, dedup_key=f"{NODE}/{gpu}/{family}", scope="gpu" if gpu is not None else "node",
                        family=family, hostname=NODE, gpu=gpu, severity="critical", status="investigating",
                        title=f"{family} on {NODE}", details=details or {}, opened_at=OPENED, updated_at=OPENED)
    incident.findings = [FindingRecord(ts=OPENED, hostname=NODE, gpu=gpu, kind=family, severity="critical",
                                       score=1.0, detector="rules", evidence=evidence or {})]
    return snapshot_of(incident).to_json()


TABLE: list[tuple[str, dict[str, Any], str, list[tuple[str, str]]]] = [
    # scenario fault, incident snapshot, fault kind, [(runbook, target)]
    ("xid79", snapshot("xid", evidence={"xid": 79}), "xid79",
     [("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("reboot_node", f"node/{NODE}")]),
    ("xid79 as gpu_lost", snapshot("gpu_lost"), "xid79",
     [("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("reboot_node", f"node/{NODE}")]),
    ("xid48_dbe", snapshot("xid", evidence={"xid": 48}), "xid48_dbe",
     [("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("reset_gpu", f"gpu/{NODE}/2")]),
    ("ecc_sbe_storm", snapshot("ecc", evidence={"sbe_rate_per_min": 120.0}), "ecc_sbe_storm",
     [("drain_node", f"node/{NODE}"), ("open_hardware_ticket", f"node/{NODE}")]),
    ("row_remap_exhaustion", snapshot("row_remap"), "row_remap_exhaustion",
     [("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("open_hardware_ticket", f"node/{NODE}")]),
    ("thermal_runaway", snapshot("thermal"), "thermal_runaway",
     [("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("open_hardware_ticket", f"node/{NODE}")]),
    ("nvlink_degradation", snapshot("nvlink"), "nvlink_degradation",
     [("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("reset_gpu", f"gpu/{NODE}/2")]),
    ("gsp_timeout", snapshot("xid", evidence={"xid": 119}), "gsp_timeout",
     [("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("reset_gpu", f"gpu/{NODE}/2")]),
    ("pcie_replay_storm", snapshot("pcie"), "pcie_replay_storm",
     [("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("open_hardware_ticket", f"node/{NODE}")]),
    ("node_not_ready", snapshot("node_not_ready", gpu=None), "node_not_ready",
     [("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("reboot_node", f"node/{NODE}")]),
    ("straggler", snapshot("straggler"), "straggler", [("reschedule_pods", f"node/{NODE}")]),
    ("hung_job", snapshot("hung_job"), "hung_job", [("restart_pod", "pod/train/llm-3-2")]),
    ("memory_leak", snapshot("memory_leak", gpu=4), "memory_leak", [("restart_pod", "pod/train/llm-3-4")]),
    ("inference_overload", snapshot("overload", gpu=None, details={"deployment": "serve/chat"}),
     "inference_overload", [("scale_deployment", "deployment/serve/chat")]),
    ("unknown anomaly", snapshot("anomaly"), "notify", [("notify_only", "none")]),
]


def plan_for(incident: dict[str, Any], tmp_path: Path) -> tuple[list[PlannedAction], str, PlanRequest]:
    ctx = build_context(SimpleNamespace(uow=None), tmp_path / "journal")  # type: ignore[arg-type]
    fault = fault_of(incident)
    evidence = [run_tool(ctx, incident, name) for name in agenda_for(incident) if name != "incident_history"]
    request = PlanRequest(incident=incident, fault=fault, evidence=evidence, specs=ctx.runbooks.specs(),
                          check=lambda a: check_action(ctx, incident, a),
                          run_tool=lambda n, a: ToolResult(n, "error", "not here"))
    result = RulesPlanner().plan(request)
    assert result.ok, result.notes
    return result.actions, result.rationale, request


@pytest.mark.parametrize(("scenario", "incident", "fault", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_rules_table(scenario: str, incident: dict[str, Any], fault: str, expected: list[tuple[str, str]],
                     tmp_path: Path) -> None:
    assert fault_of(incident) == fault
    actions, rationale, request = plan_for(incident, tmp_path)
    assert [(a.runbook, a.targets[0]) for a in actions] == expected
    assert all(request.check(a) == [] for a in actions)
    assert fault in rationale and "pods_on_node:" in rationale  # the rationale cites the evidence


def test_parameters_follow_the_context(tmp_path: Path) -> None:
    (scale,), _, _ = plan_for(snapshot("overload", gpu=None, details={"deployment": "serve/chat"}), tmp_path)
    assert scale.params["replicas"] == 6  # 4 running, half again
    (restart,), _, _ = plan_for(snapshot("hung_job"), tmp_path)
    assert restart.params["whole_job"] is True
    (leak,), _, _ = plan_for(snapshot("memory_leak", gpu=4), tmp_path)
    assert leak.params["whole_job"] is False
    (move,), _, _ = plan_for(snapshot("straggler", gpu=6), tmp_path)
    assert move.params["gpu"] == 6


def _node_wide(family: str, facts: list[tuple[int, str, dict[str, Any]]]) -> dict[str, Any]:
    """A node-scope incident of `family` with findings (gpu, severity, evidence), as the snapshot puts it."""
    incident = Incident(id=8, dedup_key=f"{NODE}/-/{family}", scope="node", family=family, hostname=NODE, gpu=None,
                        severity="critical", status="investigating", title=f"{family} on {NODE}", details={},
                        opened_at=OPENED, updated_at=OPENED)
    incident.findings = [FindingRecord(ts=OPENED, hostname=NODE, gpu=gpu, kind=family, severity=severity, score=1.0,
                                       detector="test", evidence=evidence) for gpu, severity, evidence in facts]
    return snapshot_of(incident).to_json()


def test_a_node_wide_incident_whose_facts_name_one_gpu_resets_that_gpu(tmp_path: Path) -> None:
    # an XID 74 on GPU 2; its NVLink peers' error counters rose too (suspicions on GPUs 3 and 5)
    suspicion = {"corroborated": False, "signals": []}
    incident = _node_wide("nvlink", [(2, "critical", {"xid": 74}), (3, "warning", suspicion),
                                     (5, "warning", suspicion)])
    assert incident["gpu"] is None and incident["fault_gpu"] == 2
    actions, _, request = plan_for(incident, tmp_path)
    assert [(a.runbook, a.targets[0]) for a in actions] == [
        ("cordon_node", f"node/{NODE}"), ("drain_node", f"node/{NODE}"), ("reset_gpu", f"gpu/{NODE}/2")]
    assert all(request.check(a) == [] for a in actions)
    # facts on two GPUs name no one GPU: the reset is not guessed, a human decides
    two = _node_wide("nvlink", [(2, "critical", {"xid": 74}), (6, "critical", {"xid": 74})])
    assert two["fault_gpu"] is None
    ctx = build_context(SimpleNamespace(uow=None), tmp_path / "journal2")  # type: ignore[arg-type]
    result = RulesPlanner().plan(PlanRequest(incident=two, fault=fault_of(two), evidence=[],
                                             specs=ctx.runbooks.specs(), check=lambda a: check_action(ctx, two, a),
                                             run_tool=lambda n, a: ToolResult(n, "error", "not here")))
    assert not result.ok and result.escalate is not None and "no one GPU its facts name" in result.escalate


def test_the_rules_planner_is_deterministic(tmp_path: Path) -> None:
    incident = snapshot("xid", evidence={"xid": 79})
    assert plan_for(incident, tmp_path)[:2] == plan_for(incident, tmp_path)[:2]


def test_a_pod_fault_with_no_pod_on_the_gpu_escalates(tmp_path: Path) -> None:
    ctx = build_context(SimpleNamespace(uow=None), tmp_path / "journal")  # type: ignore[arg-type]
    incident = snapshot("hung_job", gpu=2)
    request = PlanRequest(incident=incident, fault="hung_job", evidence=[], specs=ctx.runbooks.specs(),
                          check=lambda a: check_action(ctx, incident, a),
                          run_tool=lambda n, a: ToolResult(n, "error", "not here"))
    result = RulesPlanner().plan(request)
    assert not result.ok and result.escalate is not None and "no running pod" in result.escalate


def test_a_hung_job_is_restarted_as_a_whole_wherever_its_pods_run_now(tmp_path: Path) -> None:
    # the incident opened on gpu-node-003, but the job it concerns runs on gpu-node-005 now
    incident = snapshot("hung_job", gpu=None, details={"job": "train/llm-5"})
    (restart,), rationale, request = plan_for(incident, tmp_path)
    assert restart.runbook == "restart_pod" and restart.targets[0].startswith("pod/train/llm-5-")
    assert restart.params["whole_job"] is True and request.check(restart) == []
    assert "job_pods:" in rationale


def test_a_hung_replica_of_a_deployment_is_restarted_alone(tmp_path: Path) -> None:
    # the detector judged one replica (its peers serve apart): restarting every replica would be an outage
    incident = snapshot("hung_job", gpu=2, evidence={"replica": True, "pod": "llm-3-2", "job": "train/llm"})
    (restart,), _, request = plan_for(incident, tmp_path)
    assert restart.targets == ("pod/train/llm-3-2",) and restart.params["whole_job"] is False
    assert request.check(restart) == []


def test_a_pod_of_another_job_is_outside_a_job_incident(tmp_path: Path) -> None:
    ctx = build_context(SimpleNamespace(uow=None), tmp_path / "journal")  # type: ignore[arg-type]
    incident = snapshot("hung_job", gpu=None, details={"job": "train/llm-5"})
    other = PlannedAction("restart_pod", {"reason": "r", "whole_job": True}, ("pod/train/llm-6-0",))
    assert any("runs on gpu-node-006" in p for p in check_action(ctx, incident, other))


def test_a_scale_out_stops_at_the_deployments_bound_and_one_at_its_bound_escalates(tmp_path: Path) -> None:
    from connectors.kubernetes.models import DeploymentScale

    incident = snapshot("overload", gpu=None, details={"deployment": "serve/chat"})
    ctx = build_context(SimpleNamespace(uow=None), tmp_path / "journal")  # type: ignore[arg-type]
    bound = RUNBOOK_BOUNDS.max_replicas
    for current, expected in ((bound - 3, bound), (bound, None)):
        ctx.cluster.scales[("serve", "chat")] = DeploymentScale("serve", "chat", current, current)  # type: ignore[union-attr]
        evidence = [run_tool(ctx, incident, name) for name in agenda_for(incident) if name != "incident_history"]
        request = PlanRequest(incident=incident, fault="inference_overload", evidence=evidence,
                              specs=ctx.runbooks.specs(), check=lambda a: check_action(ctx, incident, a),
                              run_tool=lambda n, a: ToolResult(n, "error", "not here"))
        result = RulesPlanner().plan(request)
        if expected is None:
            assert not result.ok and result.escalate and "cannot scale out from" in result.escalate, result
        else:
            assert result.ok and result.actions[0].params["replicas"] == expected, result


def test_a_scale_out_takes_as_many_replicas_as_can_run_asking_the_cluster_few_times(tmp_path: Path) -> None:
    from connectors.kubernetes.models import DeploymentScale

    incident = snapshot("overload", gpu=None, details={"deployment": "serve/chat"})
    ctx = build_context(SimpleNamespace(uow=None), tmp_path / "journal")  # type: ignore[arg-type]
    ctx.cluster.scales[("serve", "chat")] = DeploymentScale("serve", "chat", 8, 8)  # type: ignore[union-attr]
    evidence = [run_tool(ctx, incident, name) for name in agenda_for(incident) if name != "incident_history"]
    for room, expected in ((7, 15), (3, 11), (0, 12), (4, 12)):  # 8 running: 12 wanted; no room at all: 12 anyway
        asked: list[int] = []

        def blockers(action: PlannedAction, room: int = room, asked: list[int] = asked) -> list[str]:
            asked.append(action.params["replicas"])
            more = action.params["replicas"] - 8
            return [] if more <= room else [f"no room for {more} more replica(s): {room} would fit"]

        request = PlanRequest(incident=incident, fault="inference_overload", evidence=evidence,
                              specs=ctx.runbooks.specs(), check=lambda a: check_action(ctx, incident, a),
                              run_tool=lambda n, a: ToolResult(n, "error", "not here"), blockers=blockers)
        result = RulesPlanner().plan(request)
        assert result.ok, result
        replicas = result.actions[0].params["replicas"]
        assert replicas == min(expected, 12), (room, replicas)
        assert len(asked) <= 4, asked  # the largest first, the smallest, then a bisection
        reason = result.actions[0].params["reason"]
        assert (f"{replicas} of the 12 replicas wanted" in reason) == (0 < room < 4), reason
