"""The shared vocabulary: the status groups partition their enums and agree with each other, target keys
round-trip and refuse what names no target, a budget reads back from old and new verdicts and is worded one
way, and the package imports nothing of ours."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from domain import (
    ActionStatus,
    Budget,
    ExecutionStatus,
    FindingKind,
    IncidentStatus,
    InvalidTarget,
    ProposalStatus,
    Severity,
    Target,
    TargetKind,
)
from gpuops.policy import PolicyConfig

DOMAIN = Path(__file__).resolve().parents[2] / "domain"
OURS = ("gpuops", "agent", "runbooks", "detectors", "connectors", "simulator", "migrations", "bench", "tests")

# ------------------------------------------------------------------ statuses


@pytest.mark.parametrize("status", list(ActionStatus))
def test_every_action_status_is_in_exactly_one_group(status: ActionStatus) -> None:
    groups = [ActionStatus.OPEN, ActionStatus.RUNNING, ActionStatus.FINISHED]
    assert sum(status in group for group in groups) == 1


@pytest.mark.parametrize("status", list(IncidentStatus))
def test_every_incident_status_is_active_or_closed(status: IncidentStatus) -> None:
    assert (status in IncidentStatus.ACTIVE) != (status in IncidentStatus.CLOSED)


def test_the_named_action_groups_agree() -> None:
    A = ActionStatus
    assert A.RUNNING | {A.SUCCEEDED, A.FAILED, A.ROLLED_BACK} == A.EXECUTED
    assert A.VERIFICATION_FAILED <= A.EXECUTED & A.FINISHED
    assert A.STOPPED <= A.FINISHED and not A.STOPPED & A.EXECUTED
    assert A.STOPPED | (A.EXECUTED - A.RUNNING) | {A.DRY_RUN} == A.FINISHED
    # a fresh proposal's statuses are never "finished after the proposal": that marks an earlier action
    assert {A.DENIED, A.ESCALATED} == A.FINISHED - A.FINISHED_AFTER_PROPOSAL
    assert not A.FINISHED_AFTER_PROPOSAL & set(ProposalStatus)


def test_proposal_and_execution_answers_reuse_the_action_words() -> None:
    assert {p.value for p in ProposalStatus} - {a.value for a in ActionStatus} == {"invalid"}
    assert {e.value for e in ExecutionStatus} - {a.value for a in ActionStatus} == {"already_done", "in_progress",
                                                                                    "waiting"}


def test_members_are_their_strings_in_comparisons_sets_and_json() -> None:
    assert ActionStatus.ROLLED_BACK == "rolled_back" and "rolled_back" in ActionStatus.EXECUTED
    assert ProposalStatus.DENIED == ActionStatus.DENIED and ProposalStatus.DENIED in ActionStatus.FINISHED
    assert f"status.{IncidentStatus.RESOLVED}" == "status.resolved"
    assert json.dumps({"status": ActionStatus.DRY_RUN}) == '{"status": "dry_run"}'


def test_kinds_and_severities_keep_the_findings_contract() -> None:
    assert {k.value for k in FindingKind} == {
        "xid", "gpu_lost", "ecc", "row_remap", "thermal", "nvlink", "pcie", "power", "straggler", "hung_job",
        "memory_leak", "node_not_ready", "overload", "anomaly", "fabric"}
    assert [s.value for s in sorted(Severity, key=lambda s: s.rank)] == ["info", "warning", "critical"]


# ------------------------------------------------------------------ targets


@pytest.mark.parametrize("key", ["node/gpu-node-003", "gpu/gpu-node-003/5", "pod/training/job-a-worker-3",
                                 "deployment/serve/llm", "none"])
def test_target_keys_round_trip(key: str) -> None:
    target = Target.parse(key)
    assert target.key() == key and Target.parse(target.key()) == target


def test_parsed_targets_name_their_parts() -> None:
    assert Target.parse("gpu/gpu-node-003/5") == Target(TargetKind.GPU, node="gpu-node-003", gpu=5)
    assert Target.parse("node/gpu-node-003").node == "gpu-node-003"
    assert Target.parse("pod/ml/train-0").node is None  # a pod's key does not say where it runs
    assert Target.parse("deployment/serve/llm") == Target.for_deployment("serve", "llm")


@pytest.mark.parametrize(("key", "why"), [
    ("", "is not one of node/NODE"), ("node", "is not one of"), ("node/a/b", "is not one of"),
    ("gpu/n", "is not one of"), ("gpu/n/x", "GPU index must be an integer"), ("gpu/n/-1", "GPU index"),
    ("rack/r1", "is not one of"), ("pod/ns", "is not one of"), ("none/x", "is not one of"), ("node/", "needs node"),
    (7, "is not one of"),
])
def test_keys_that_name_no_target_are_refused_saying_why(key: Any, why: str) -> None:
    with pytest.raises(InvalidTarget, match=why):
        Target.parse(key)


def test_a_target_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        Target.for_node("a/b")


# ------------------------------------------------------------------ budget

OLD_VERDICT_BUDGET = {"nodes_out": 0, "nodes_out_after": 1, "nodes_out_limit": 2, "healthy_gpus_after": 56,
                      "min_healthy_gpus": 32, "actions_last_hour": 1, "rate_limit": 10}


def test_a_budget_stored_before_the_derivation_reads_and_words_as_before() -> None:
    budget = Budget.from_json(OLD_VERDICT_BUDGET)
    assert budget is not None and budget.to_json() == OLD_VERDICT_BUDGET
    assert budget.describe() == [("Nodes out after", "1/2 (1 left)"),
                                 ("Healthy GPUs after", "56 (minimum 32, 24 spare)"),
                                 ("Actions this hour", "1/10")]


def test_a_budget_says_how_its_limits_were_derived_and_round_trips() -> None:
    budget = Budget(nodes_out=2, nodes_out_after=3, nodes_out_limit=2, healthy_gpus_after=50, min_healthy_gpus=55,
                    actions_last_hour=20, rate_limit=20, fleet_nodes=20, max_nodes_out=2,
                    max_nodes_out_fraction=0.125, fleet_gpus=100, min_healthy_gpu_fraction=0.55)
    assert Budget.from_json(json.loads(json.dumps(budget.to_json()))) == budget
    assert dict(budget.describe()) == {
        "Nodes out after": "3/2 (1 over); limit: the smaller of 2 and 12.5% of 20 nodes",
        "Healthy GPUs after": "50 (minimum 55, 5 short); minimum: 55% of 100 GPUs",
        "Actions this hour": "20/20",
    }


def test_a_budget_over_its_nodes_limit_already_says_the_action_adds_no_node() -> None:
    """People's cordons hold three nodes out against a limit of one; a GPU-only action adds none, and says so."""
    gpu_only = Budget(nodes_out=3, nodes_out_after=3, nodes_out_limit=1, healthy_gpus_after=50, min_healthy_gpus=40,
                      actions_last_hour=0, rate_limit=20)
    assert dict(gpu_only.describe())["Nodes out after"] == "3/1 (2 over, already: this action takes no node out)"
    drain = Budget(nodes_out=3, nodes_out_after=4, nodes_out_limit=1, healthy_gpus_after=50, min_healthy_gpus=40,
                   actions_last_hour=0, rate_limit=20)
    assert dict(drain.describe())["Nodes out after"] == "4/1 (3 over)"


@pytest.mark.parametrize("stored", [None, {}, {"nodes_out": 0}, {**OLD_VERDICT_BUDGET, "rate_limit": "10"},
                                    {**OLD_VERDICT_BUDGET, "nodes_out": True}, ["nodes_out"]])
def test_a_verdict_without_a_whole_budget_has_none(stored: Any) -> None:
    assert Budget.from_json(stored) is None


def test_the_healthy_gpu_floor_rounds_up_but_not_on_float_error() -> None:
    assert PolicyConfig(min_healthy_gpu_fraction=0.55).min_healthy_gpus(100) == 55  # 0.55 × 100 = 55.000…01
    assert PolicyConfig(min_healthy_gpu_fraction=0.8).min_healthy_gpus(63) == 51  # 50.4 → 51
    assert PolicyConfig(min_healthy_gpu_fraction=0.0).min_healthy_gpus(64) == 0


def test_the_healthy_gpu_floor_lets_one_node_out_of_a_small_fleet_unless_the_fraction_is_one() -> None:
    default = PolicyConfig()
    assert default.min_healthy_gpus(64, 8) == 52  # five nodes or more: the fraction alone (56 ≥ 52)
    assert default.min_healthy_gpus(40, 8) == 32  # five nodes: one node is exactly the fraction's spare
    assert default.min_healthy_gpus(32, 8) == 24  # four nodes: 26 would forbid any node action
    assert default.min_healthy_gpus(8, 8) == 0
    assert PolicyConfig(min_healthy_gpu_fraction=1.0).min_healthy_gpus(32, 8) == 32


# ------------------------------------------------------------------ layering


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda p: p.name)
def test_domain_imports_nothing_of_ours(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] in OURS], imported
