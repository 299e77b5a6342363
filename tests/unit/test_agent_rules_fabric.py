"""The rules planner on fabric incidents: a node whose link is down, flapping or whose HCA is lost is cordoned,
drained and gets a hardware ticket naming the HCA and port (no drain when nothing on the port's GPU crosses
nodes); a slow link (degraded, symbol errors) has its job moved where it can run elsewhere, and is ticketed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.rules import fault_of
from tests.unit.test_agent_rules import NODE, plan_for, snapshot

FABRIC = {"device": "mlx5_3", "port": "1", "hca": 3}


@pytest.mark.parametrize(("condition", "fault", "runbooks"), [
    ("link_down", "ib_link_down", ["cordon_node", "drain_node", "open_hardware_ticket"]),
    ("link_flap", "ib_link_flap", ["cordon_node", "drain_node", "open_hardware_ticket"]),
    ("link_degraded", "ib_link_degraded", ["open_hardware_ticket", "reschedule_pods"]),
    ("hca_lost", "nic_lost", ["cordon_node", "drain_node", "open_hardware_ticket"]),
    ("symbol_errors", "ib_symbol_errors", ["open_hardware_ticket", "reschedule_pods"]),
])
def test_fabric_incidents(condition: str, fault: str, runbooks: list[str], tmp_path: Path) -> None:
    incident = snapshot("fabric", gpu=None, evidence={**FABRIC, "condition": condition})
    assert fault_of(incident) == fault
    actions, _, request = plan_for(incident, tmp_path)
    assert [a.runbook for a in actions] == runbooks
    assert all(a.targets == (f"node/{NODE}",) for a in actions)
    assert all(request.check(a) == [] for a in actions)
    (ticket,) = [a for a in actions if a.runbook == "open_hardware_ticket"]
    assert "HCA mlx5_3 port 1" in ticket.params["summary"] and ticket.params["fault"] == fault
    assert ticket.params["evidence"]["device"] == "mlx5_3" and ticket.params["gpu"] is None
    moves = [a for a in actions if a.runbook == "reschedule_pods"]
    assert all(a.params["gpu"] == 3 and a.params["keep_off"] == "cordon" for a in moves)  # the port's GPU's job


@pytest.mark.parametrize(("condition", "runbooks"), [
    ("link_degraded", ["cordon_node", "open_hardware_ticket"]),
    ("symbol_errors", ["open_hardware_ticket", "taint_port"]),
])
def test_a_slow_links_job_with_no_room_elsewhere_stays_at_its_pace(condition: str, runbooks: list[str],
                                                                   tmp_path: Path) -> None:
    from dataclasses import replace

    from agent.rules import RulesPlanner

    incident = snapshot("fabric", gpu=None, evidence={**FABRIC, "condition": condition})
    _, _, request = plan_for(incident, tmp_path)
    asked: list[str] = []

    def no_room(action: object) -> list[str]:
        asked.append(getattr(action, "runbook", ""))
        return ["no room elsewhere for train/llm-0 (8 GPUs): the most free GPUs on another node is 4"]

    result = RulesPlanner().plan(replace(request, blockers=no_room))
    assert result.ok and [a.runbook for a in result.actions] == runbooks and asked == ["reschedule_pods"]
    assert "The job stays at the slower pace: no room elsewhere for train/llm-0" in result.rationale


def _plan_on(cluster_setup: str, condition: str, tmp_path: Path, job: str | None = None) -> tuple[list[str], str]:
    from types import SimpleNamespace

    from agent.planning import PlanRequest
    from agent.rules import RulesPlanner
    from agent.tools import ToolResult, agenda_for, run_tool
    from agent.validation import check_action
    from tests.agent.world import build_context, default_cluster

    cluster = default_cluster(tmp_path / "journal")
    for key in [k for k in cluster.pods if cluster.pods[k].node == NODE]:
        del cluster.pods[key]  # gpu-node-003 emptied of the training job
    if cluster_setup == "replica":
        cluster.add_pod("serve", "chat-7f9c-x2k4q", NODE, gpus=1, owner_kind="ReplicaSet", owner_name="chat-7f9c")
        pod = cluster.pods[("serve", "chat-7f9c-x2k4q")]
        cluster.pods[("serve", pod.name)] = pod.__class__(**{**pod.__dict__, "gpu_indices": (3,)})
    elif cluster_setup in ("job", "job-unknown-gpus"):
        pod = cluster.add_pod("train", "solo-0", NODE, gpus=8, owner_kind="Job", owner_name="solo")
        if cluster_setup == "job-unknown-gpus":  # the cluster says how many GPUs, not which
            cluster.pods[("train", pod.name)] = pod.__class__(**{**pod.__dict__, "gpu_indices": ()})
    elif cluster_setup == "crowded":  # 30 DaemonSet pods listed before the job's; train/solo has 24 pods elsewhere
        for i in range(30):
            cluster.add_pod("kube-system", f"agent-{i}", NODE, gpus=0, owner_kind="DaemonSet", owner_name=f"ds{i}")
        pod = cluster.add_pod("train", "solo-0", NODE, gpus=1, owner_kind="Job", owner_name="solo")
        cluster.pods[("train", pod.name)] = pod.__class__(**{**pod.__dict__, "gpu_indices": (3,)})
        for i in range(1, 25):
            cluster.add_pod("train", f"solo-{i}", "gpu-node-005", gpus=0, owner_kind="Job", owner_name="solo")
    elif cluster_setup in ("job-here", "job-across"):  # train/solo: one pod on the port's GPU, one maybe elsewhere
        pod = cluster.add_pod("train", "solo-0", NODE, gpus=1, owner_kind="Job", owner_name="solo")
        cluster.pods[("train", pod.name)] = pod.__class__(**{**pod.__dict__, "gpu_indices": (3,)})
        cluster.add_pod("train", "solo-1", NODE if cluster_setup == "job-here" else "gpu-node-005", gpus=1,
                        owner_kind="Job", owner_name="solo")
    ctx = build_context(SimpleNamespace(uow=None), tmp_path / "journal", cluster=cluster)  # type: ignore[arg-type]
    named = {"job": job} if job else {}
    incident = snapshot("fabric", gpu=None, evidence={**FABRIC, "condition": condition, **named})
    # the evidence as the planner gets it: through the state's JSON, which cuts long lists
    evidence = [ToolResult.from_json(run_tool(ctx, incident, name).to_json()) for name in agenda_for(incident)
                if name != "incident_history"]
    request = PlanRequest(incident=incident, fault=fault_of(incident), evidence=evidence, specs=ctx.runbooks.specs(),
                          check=lambda a: check_action(ctx, incident, a),
                          run_tool=lambda n, a: ToolResult(n, "error", "not here"))
    result = RulesPlanner().plan(request)
    assert result.ok, result.notes
    return [a.runbook for a in result.actions], result.rationale


@pytest.mark.parametrize("condition", ["link_down", "hca_lost"])
def test_a_port_whose_gpu_serves_alone_or_idles_is_ticketed_without_a_drain(condition: str, tmp_path: Path) -> None:
    runbooks, why = _plan_on("replica", condition, tmp_path)
    assert runbooks == ["cordon_node", "open_hardware_ticket"]
    assert "No drain: GPU 3 beside mlx5_3 serves replicas of Deployments (serve/chat-7f9c-x2k4q)" in why
    runbooks, why = _plan_on("idle", condition, tmp_path / "idle")
    assert runbooks == ["cordon_node", "open_hardware_ticket"] and "holds no pod" in why
    # a job's pod may have ranks elsewhere: drained as before
    for setup in ("job", "job-unknown-gpus"):
        runbooks, why = _plan_on(setup, condition, tmp_path / setup)
        assert runbooks == ["cordon_node", "drain_node", "open_hardware_ticket"] and "No drain" not in why


def test_a_slow_link_moves_a_job_across_nodes_and_leaves_replicas_serving(tmp_path: Path) -> None:
    runbooks, why = _plan_on("replica", "link_degraded", tmp_path)
    assert runbooks == ["cordon_node", "open_hardware_ticket"] and "No drain: GPU 3 beside mlx5_3 serves" in why
    runbooks, why = _plan_on("job", "link_degraded", tmp_path / "job")
    assert runbooks == ["open_hardware_ticket", "reschedule_pods"] and "stays" not in why
    runbooks, _ = _plan_on("replica", "symbol_errors", tmp_path / "symbols")
    assert runbooks == ["open_hardware_ticket", "taint_port"]


def test_a_port_with_symbol_errors_its_job_does_not_cross_keeps_new_work_across_nodes_off(tmp_path: Path) -> None:
    """Symbol errors on a port nothing crosses (an idle GPU, or replicas serving on the node): the ticket, then the
    port's taint, so that a multi-node job does not land on the port before its repair; nothing moves."""
    from dataclasses import replace

    from agent.rules import RulesPlanner

    for setup in ("idle", "replica"):
        runbooks, why = _plan_on(setup, "symbol_errors", tmp_path / setup)
        assert runbooks == ["open_hardware_ticket", "taint_port"], why
    incident = snapshot("fabric", gpu=None, evidence={**FABRIC, "condition": "symbol_errors"})
    _, _, request = plan_for(incident, tmp_path / "params")
    result = RulesPlanner().plan(replace(request, blockers=lambda action: ["no room elsewhere"]))
    (taint,) = [a for a in result.actions if a.runbook == "taint_port"]
    assert taint.params["hca"] == "mlx5_3" and taint.targets == (f"node/{NODE}",) and request.check(taint) == []
    # a finding that names no HCA cannot say which port: the ticket alone, no taint on a guess
    bare = snapshot("fabric", gpu=None, evidence={"condition": "symbol_errors"})
    _, _, request = plan_for(bare, tmp_path / "bare")
    result = RulesPlanner().plan(replace(request, blockers=lambda action: ["no room elsewhere"]))
    assert result.ok and [a.runbook for a in result.actions] == ["open_hardware_ticket"], result.notes


@pytest.mark.parametrize("condition", ["link_down", "link_flap", "hca_lost"])
def test_a_port_whose_gpu_runs_a_job_on_this_node_alone_is_not_drained(condition: str, tmp_path: Path) -> None:
    # every pod of train/solo is on the node: its ranks talk over NVLink and PCIe, never over the port
    runbooks, why = _plan_on("job-here", condition, tmp_path, job="train/solo")
    assert runbooks == ["cordon_node", "open_hardware_ticket"]
    assert f"No drain: GPU 3 beside mlx5_3 runs train/solo, whose every pod is on {NODE}" in why
    # a rank on another node crosses the port: drained
    runbooks, why = _plan_on("job-across", condition, tmp_path / "across", job="train/solo")
    assert runbooks == ["cordon_node", "drain_node", "open_hardware_ticket"] and "No drain" not in why
    # a finding that names no job: its span is unknown, drained as before
    runbooks, why = _plan_on("job-here", condition, tmp_path / "unnamed")
    assert runbooks == ["cordon_node", "drain_node", "open_hardware_ticket"] and "No drain" not in why


def test_a_slow_link_leaves_a_job_on_this_node_alone_where_it_runs(tmp_path: Path) -> None:
    runbooks, why = _plan_on("job-here", "link_degraded", tmp_path, job="train/solo")
    assert runbooks == ["cordon_node", "open_hardware_ticket"] and "runs train/solo" in why
    runbooks, _ = _plan_on("job-across", "link_degraded", tmp_path / "across", job="train/solo")
    assert runbooks == ["open_hardware_ticket", "reschedule_pods"]


@pytest.mark.parametrize("condition", ["link_down", "link_degraded"])
def test_evidence_cut_short_is_read_as_far_as_it_goes(condition: str, tmp_path: Path) -> None:
    # the node's 31 pods and the job's 25 are more than the evidence keeps: the pod on the port's GPU is still
    # found, and a job whose whole list is not known is taken to cross nodes
    runbooks, why = _plan_on("crowded", condition, tmp_path, job="train/solo")
    assert "No drain" not in why
    assert runbooks == (["cordon_node", "drain_node", "open_hardware_ticket"] if condition == "link_down"
                        else ["open_hardware_ticket", "reschedule_pods"])
