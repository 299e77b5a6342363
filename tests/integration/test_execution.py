"""Execution through the real `kubernetes` client against the twin: an approved action runs exactly once, a plan
changed after approval or an expired approval is refused, budgets are re-checked when the action runs, a fleet
incident proposes no node action, dry-run mode stops at the diff."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from connectors.kubernetes.adapter import KubernetesCluster
from gpuops.execution.approvals import Approver, decide
from gpuops.execution.service import ExecutionDeps, Proposal, execute, incident_gpu_uuid, propose
from gpuops.policy import PolicyConfig, release_node
from gpuops.store.audit import verify_chain
from gpuops.store.models import Action, AuditEvent, FindingRecord, Incident, NodeLease
from gpuops.wiring import Container
from runbooks import Plan, Target, default_catalogue
from tests.runbook_twin import FAST, Twin, connect

NODES = [f"gpu-node-{i:03d}" for i in range(1, 11)]
ALICE = Approver("alice", "dashboard", True)


@pytest.fixture
def twin() -> Iterator[Twin]:
    twin = Twin().start()
    for node in NODES:
        twin.state.add_node(node, 8)
    try:
        yield twin
    finally:
        twin.stop()


@pytest.fixture
def deps(twin: Twin) -> Iterator[ExecutionDeps]:
    cluster: KubernetesCluster = connect(twin)
    try:
        yield ExecutionDeps(catalogue=default_catalogue(FAST), cluster=cluster, runbook_settings=FAST,
                            policy=PolicyConfig(max_nodes_out=1, max_nodes_out_fraction=0.5, approval_ttl_s=600),
                            clock=twin.clock, sleep=twin.sleep, worker="test-worker")
    finally:
        cluster.close()


def now(deps: ExecutionDeps) -> datetime:
    return datetime.fromtimestamp(deps.clock(), tz=UTC)


def incident(container: Container, deps: ExecutionDeps, node: str | None, scope: str = "node") -> int:
    with container.uow() as uow:
        inc = Incident(dedup_key=f"{node}//ecc", scope=scope, family="ecc", hostname=node, severity="critical",
                       title="DBE storm", status="investigating", opened_at=now(deps), updated_at=now(deps))
        uow.session.add(inc)
        uow.commit()
        return inc.id


def cordon(node: str) -> Plan:
    return Plan("cordon_node", {"reason": "ECC errors"}, (Target.for_node(node),))


def submit(container: Container, deps: ExecutionDeps, incident_id: int, plan: Plan) -> tuple[int | None, str]:
    with container.uow() as uow:
        outcome = propose(uow, proposal=Proposal(incident_id, plan, "DBE count rose by 2", "rules"), deps=deps)
        uow.commit()
    return outcome.action_id, outcome.status


def approve(container: Container, deps: ExecutionDeps, action_id: int) -> None:
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None
        outcome = decide(uow.session, action_id=action_id, approver=ALICE, decision="approve",
                         plan_hash=action.plan_hash, reason="ok", now=now(deps), ttl_s=deps.policy.approval_ttl_s)
        uow.commit()
    outcome.raise_for_refusal()


def audit(container: Container) -> list[str]:
    with container.uow() as uow:
        assert verify_chain(uow.session).ok
        return list(uow.session.scalars(select(AuditEvent.kind).order_by(AuditEvent.seq)))


def test_approved_action_delivered_twice_executes_once(container: Container, deps: ExecutionDeps,
                                                        twin: Twin) -> None:
    action_id, status = submit(container, deps, incident(container, deps, NODES[0]), cordon(NODES[0]))
    assert status == "awaiting_approval" and action_id is not None
    approve(container, deps, action_id)
    first = execute(container.uow, action_id=action_id, deps=deps, dry_run=False)
    second = execute(container.uow, action_id=action_id, deps=deps, dry_run=False)
    assert (first.status, first.verified) == ("succeeded", True)
    assert second.status == "already_done"
    assert twin.state.get_node(NODES[0])["spec"].get("unschedulable") is True
    kinds = audit(container)
    assert kinds.count("action.claimed") == 1 and "action.step" in kinds and "action.succeeded" in kinds
    with container.uow() as uow:
        leases = list(uow.session.scalars(select(NodeLease.hostname).where(NodeLease.released_at.is_(None))))
        assert leases == [NODES[0]]


def test_a_plan_changed_after_approval_is_refused(container: Container, deps: ExecutionDeps, twin: Twin) -> None:
    action_id, _ = submit(container, deps, incident(container, deps, NODES[0]), cordon(NODES[0]))
    assert action_id is not None
    approve(container, deps, action_id)
    with container.uow() as uow:  # someone edits the stored plan after the human approved it
        action = uow.session.get(Action, action_id)
        assert action is not None
        action.targets = [f"node/{NODES[1]}"]
        uow.commit()
    outcome = execute(container.uow, action_id=action_id, deps=deps, dry_run=False)
    assert outcome.status == "refused" and "plan changed" in outcome.detail
    assert not any(twin.state.get_node(n)["spec"].get("unschedulable") for n in NODES)
    assert "action.refused" in audit(container)


def test_an_expired_approval_is_refused(container: Container, deps: ExecutionDeps, twin: Twin) -> None:
    action_id, _ = submit(container, deps, incident(container, deps, NODES[0]), cordon(NODES[0]))
    assert action_id is not None
    approve(container, deps, action_id)
    twin.clock.t += deps.policy.approval_ttl_s + 1
    outcome = execute(container.uow, action_id=action_id, deps=deps, dry_run=False)
    assert outcome.status == "refused" and "expired" in outcome.detail
    assert twin.state.get_node(NODES[0])["spec"].get("unschedulable") is not True


def _approved_cordons(container: Container, deps: ExecutionDeps, count: int = 2) -> list[int]:
    """Cordons of the first `count` nodes, each proposed and approved while the nodes-out budget (1) still had
    room for it."""
    approved = []
    for node in NODES[:count]:
        action_id, status = submit(container, deps, incident(container, deps, node), cordon(node))
        assert status == "awaiting_approval" and action_id is not None
        approve(container, deps, action_id)
        approved.append(action_id)
    return approved


def test_budgets_are_checked_again_when_the_action_runs(container: Container, deps: ExecutionDeps,
                                                        twin: Twin) -> None:
    approved = _approved_cordons(container, deps)
    results = [execute(container.uow, action_id=a, deps=deps, dry_run=False).status for a in approved]
    assert results == ["succeeded", "waiting"]
    assert [n for n in NODES if twin.state.get_node(n)["spec"].get("unschedulable")] == [NODES[0]]


def _held(container: Container, action_id: int) -> tuple[str, datetime | None, bool, list[str]]:
    """The incident of `action_id`: its status, its hold, whether it waits for the budget, and its timeline's
    hold entries."""
    from gpuops.store.models import IncidentEvent

    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None
        inc = action.incident
        entries = list(uow.session.scalars(select(IncidentEvent.message).where(
            IncidentEvent.incident_id == inc.id, IncidentEvent.kind.in_(("agent.held", "agent.hold_over")))
            .order_by(IncidentEvent.id)))
        return inc.status, inc.held_until, "budget_wait_since" in inc.details, entries


def test_an_action_the_budget_refuses_for_gpuops_own_node_waits_for_it_then_runs(container: Container,
                                                                               deps: ExecutionDeps, twin: Twin) -> None:
    """Another incident's remediation took the last slot of the budget between this action's approval and its
    execution: gpuops' own node comes back by itself, so the action waits for it (its incident held, so the sweep
    resumes its thread) instead of going to a human, and runs once the node is back."""
    first, second = _approved_cordons(container, deps)
    assert execute(container.uow, action_id=first, deps=deps, dry_run=False).status == "succeeded"
    waiting = execute(container.uow, action_id=second, deps=deps, dry_run=False)
    assert waiting.status == "waiting" and "1 node(s) out (limit 1)" in waiting.detail and waiting.until
    status, held_until, marked, entries = _held(container, second)
    assert status == "awaiting_approval" and marked and held_until is not None
    assert held_until.replace(tzinfo=UTC) == now(deps) + timedelta(seconds=300)
    assert held_until.replace(tzinfo=UTC).isoformat() == waiting.until
    assert len(entries) == 1 and "waits for the budget" in entries[0] and NODES[0] in entries[0]

    twin.clock.t += 300  # a recheck while the node is still out: still waiting, one timeline entry for the wait
    assert execute(container.uow, action_id=second, deps=deps, dry_run=False).status == "waiting"
    assert len(_held(container, second)[3]) == 1

    deps.cluster.uncordon(NODES[0])  # gpuops returns its node after probation
    with container.uow() as uow:
        release_node(uow.session, node=NODES[0], now=now(deps))
        uow.commit()
    assert execute(container.uow, action_id=second, deps=deps, dry_run=False).status == "succeeded"
    assert twin.state.get_node(NODES[1])["spec"].get("unschedulable") is True
    status, held_until, marked, entries = _held(container, second)
    assert held_until is None and not marked and "fits the budgets now" in entries[-1]


def test_an_action_the_budget_refuses_for_someone_elses_cordon_or_past_the_wait_is_refused(
        container: Container, deps: ExecutionDeps, twin: Twin) -> None:
    """Waiting helps only while the budget is spent on gpuops' own nodes, and only up to `budget_wait_s`: a
    human's cordon refuses at once, and a wait that runs out refuses naming the budget and ends the hold."""
    first, second, third = _approved_cordons(container, deps, 3)
    deps.cluster.cordon(NODES[5], reason="a human's maintenance")  # not gpuops' to return: waiting cannot help
    outcome = execute(container.uow, action_id=first, deps=deps, dry_run=False)
    assert outcome.status == "refused" and "budget: 1 node(s) already out" in outcome.detail
    assert _held(container, first)[:3] == ("escalated", None, False)

    deps.cluster.uncordon(NODES[5])
    assert execute(container.uow, action_id=second, deps=deps, dry_run=False).status == "succeeded"
    short = replace(deps, policy=deps.policy.model_copy(update={"budget_wait_s": 400.0}))
    assert execute(container.uow, action_id=third, deps=short, dry_run=False).status == "waiting"
    twin.clock.t += 300
    assert execute(container.uow, action_id=third, deps=short, dry_run=False).status == "waiting"
    twin.clock.t += 100  # 400 s of waiting: the budget is still spent
    outcome = execute(container.uow, action_id=third, deps=short, dry_run=False)
    assert outcome.status == "refused" and "policy at execution time: budget: 1 node(s) already out" in outcome.detail
    status, held_until, marked, entries = _held(container, third)
    assert status == "escalated" and held_until is None and not marked and "stops waiting" in entries[-1]
    assert twin.state.get_node(NODES[2])["spec"].get("unschedulable") is not True


def test_a_fleet_incident_proposes_no_node_action(container: Container, deps: ExecutionDeps, twin: Twin) -> None:
    fleet = incident(container, deps, None, scope="fleet")
    action_id, status = submit(container, deps, fleet, cordon(NODES[3]))
    assert status == "escalated"
    outcome = execute(container.uow, action_id=action_id or 0, deps=deps, dry_run=False)
    assert outcome.status in ("already_done", "refused")
    assert not any(twin.state.get_node(n)["spec"].get("unschedulable") for n in NODES)
    with container.uow() as uow:
        inc = uow.session.get(Incident, fleet)
        assert inc is not None and inc.status == "escalated"


def test_targets_outside_the_incident_and_unknown_runbooks_are_refused(container: Container,
                                                                      deps: ExecutionDeps) -> None:
    inc = incident(container, deps, NODES[0])
    assert submit(container, deps, inc, cordon(NODES[5]))[1] == "denied"
    bogus = Plan("format_disk", {}, (Target.for_node(NODES[0]),))
    assert submit(container, deps, inc, bogus) == (None, "invalid")
    assert "plan.invalid" in audit(container)


def test_dry_run_stops_at_the_diff(container: Container, deps: ExecutionDeps, twin: Twin) -> None:
    action_id, _ = submit(container, deps, incident(container, deps, NODES[0]), cordon(NODES[0]))
    assert action_id is not None
    approve(container, deps, action_id)
    before = twin.snapshot()
    outcome = execute(container.uow, action_id=action_id, deps=deps, dry_run=True)
    assert outcome.status == "dry_run" and NODES[0] in outcome.detail
    assert twin.snapshot() == before


def test_proposing_the_same_plan_again_returns_the_same_action(container: Container, deps: ExecutionDeps) -> None:
    inc = incident(container, deps, NODES[0])
    first = submit(container, deps, inc, cordon(NODES[0]))
    again = submit(container, deps, inc, cordon(NODES[0]))
    assert first == again


def test_a_reopened_incident_may_run_the_same_plan_again(container: Container, deps: ExecutionDeps) -> None:
    inc = incident(container, deps, NODES[0])
    first, _ = submit(container, deps, inc, cordon(NODES[0]))
    with container.uow() as uow:  # what a recurrence after resolution does to the incident
        row = uow.session.get(Incident, inc)
        assert row is not None
        row.details = {**row.details, "round": 1}
        uow.commit()
    second, status = submit(container, deps, inc, cordon(NODES[0]))
    assert second is not None and second != first and status in ("awaiting_approval", "denied")


def test_a_gpu_request_names_the_gpu_its_incident_is_about(container: Container, deps: ExecutionDeps,
                                                           twin: Twin) -> None:
    """A reset sent to the node agent carries the UUID the incident's latest finding gave its GPU (NVML may number
    the node's GPUs otherwise by then); a GPU the incident's findings never named goes by its index alone."""
    incident_id = incident(container, deps, NODES[2])
    with container.uow() as uow:
        for t, uuid in ((0, "GPU-old-name-of-index-3"), (60, "GPU-4b1d-index-3")):
            uow.session.add(FindingRecord(ts=datetime.fromtimestamp(deps.clock() + t, tz=UTC), hostname=NODES[2],
                                          gpu=3, uuid=uuid, kind="ecc", severity="critical", score=1.0,
                                          detector="rules.ecc_dbe", incident_id=incident_id))
        uow.session.add(FindingRecord(ts=now(deps), hostname=NODES[2], gpu=5, uuid="GPU-of-another-incident",
                                      kind="ecc", severity="critical", score=1.0, detector="rules.ecc_dbe"))
        uow.commit()

    def named(incident_id: int | None, node: str, gpu: int) -> str | None:
        with container.uow() as uow:
            return incident_gpu_uuid(uow.session, incident_id, node, gpu)

    deps = replace(deps, gpu_uuid=named)
    for gpu in (3, 5):
        plan = Plan("reset_gpu", {"reason": "DBE"}, (Target.for_gpu(NODES[2], gpu),))
        action_id, _ = submit(container, deps, incident_id, plan)
        assert action_id is not None
        approve(container, deps, action_id)
        execute(container.uow, action_id=action_id, deps=deps, dry_run=False)
    objects, _ = twin.state.list_objects("gpuresets", "")
    specs = {o["spec"]["gpu"]: o["spec"] for o in objects}
    assert specs[3]["uuid"] == "GPU-4b1d-index-3" and "uuid" not in specs[5]


def test_an_action_refused_for_more_than_the_budget_does_not_wait(container: Container, deps: ExecutionDeps,
                                                                   twin: Twin) -> None:
    """A freeze window that began after the approval refuses the action whatever the budget: waiting for
    gpuops' own node to come back would not let it run, so it goes to a human at once."""
    from gpuops.policy import FreezeWindow

    first, second = _approved_cordons(container, deps)
    assert execute(container.uow, action_id=first, deps=deps, dry_run=False).status == "succeeded"
    window = FreezeWindow(starts_at=now(deps), ends_at=now(deps) + timedelta(hours=2), reason="model launch")
    frozen = replace(deps, policy=deps.policy.model_copy(update={"freeze_windows": (window,)}))
    outcome = execute(container.uow, action_id=second, deps=frozen, dry_run=False)
    assert outcome.status == "refused" and "freeze window" in outcome.detail and "budget" in outcome.detail
    assert _held(container, second)[:3] == ("escalated", None, False)
