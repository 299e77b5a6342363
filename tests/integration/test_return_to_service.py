"""Return to service after a verified remediation: the node waits on probation in examined data time, then
gpuops lifts its own cordon through an uncordon_node action and frees the node budget; a new error, or a fault
the remediation does not fix, keeps the node out with a hardware ticket; a human's cordon is never lifted."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from detectors.findings import Finding
from gpuops.config import Settings
from gpuops.execution.approvals import Approver
from gpuops.execution.probation import mark_repaired
from gpuops.execution.service import BUDGET_RECHECK_S
from gpuops.incidents.service import ingest_findings
from gpuops.pipeline import OrderedDispatcher, Pipeline, Step
from gpuops.policy import PolicyConfig
from gpuops.store import migrate
from gpuops.store.models import (
    Action,
    AuditEvent,
    HardwareTicket,
    Incident,
    IncidentEvent,
    NodeLease,
    NodeProbation,
)
from gpuops.wiring import bootstrap
from tests.agent.helpers import mark_examined, open_incident
from tests.agent.world import RUNBOOK_SETTINGS, JournalCluster, default_cluster, executed

ALICE, BOB = "alice", "bob"
NODE, OTHER, THIRD = "gpu-node-003", "gpu-node-005", "gpu-node-006"
PROBATION_S = 1800.0
# One node out at a time, no soak (no detection runs here), and the low-risk actions policy approves alone. No
# fences here: a GPU that needs replacing keeps its node out (the fence tests turn them on).
POLICY = PolicyConfig(max_nodes_out=1, max_nodes_out_fraction=0.25, min_healthy_gpu_fraction=0.5, soak_s=0,
                      common_cause_window_s=0, node_cooldown_s=0, probation_s=PROBATION_S, fence_gpus=False,
                      auto_approve=frozenset({"notify_only", "cordon_node", "uncordon_node", "untaint_node",
                                              "open_hardware_ticket"}))
FENCING = POLICY.model_copy(update={"fence_gpus": True, "auto_approve": POLICY.auto_approve | {"fence_gpu"}})


@dataclasses.dataclass
class World:
    pipeline: Pipeline
    dispatcher: OrderedDispatcher
    cluster: JournalCluster

    def settle(self, incident_id: int, *, reject: str | None = None) -> None:
        """Play the on-call humans: approve each action the incident waits for (two people when it takes two),
        or reject the runbook named `reject`, until the incident's thread stops."""
        self.pipeline.agent_step(incident_id)
        self.dispatcher.drain()
        while (action := _waiting(self, incident_id)) is not None:
            people = [ALICE] if action.runbook == reject else [ALICE, BOB][:max(1, action.approvals_required)]
            for who in people:
                self.pipeline.decide(action_id=action.id, approver=Approver(who, "cli", True),
                                     decision="reject" if action.runbook == reject else "approve",
                                     plan_hash=action.plan_hash, reason="test")
            self.dispatcher.drain()

    def examined(self, seconds_after_now: float) -> None:
        """Detection has examined telemetry up to `seconds_after_now` past the clock, and the clock is there."""
        self.cluster.now += seconds_after_now
        with self.pipeline.container.uow() as uow:
            mark_examined(uow.session, self.cluster.now)
            uow.commit()

    def sweep(self) -> list[int]:
        probations = self.pipeline.sweep().probations
        self.dispatcher.drain()
        return probations


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    yield from _world(db_url, tmp_path, POLICY)


def _world(db_url: str, tmp_path: Path, policy: PolicyConfig) -> Iterator[World]:
    migrate.upgrade(db_url)
    cluster = default_cluster(tmp_path / "journal")
    settings = Settings(database_url=db_url, dry_run=False)
    container = bootstrap(settings, cluster=cluster, policy=policy, runbook_settings=RUNBOOK_SETTINGS)
    dispatcher = OrderedDispatcher(cluster.clock)
    pipeline = Pipeline(container, dispatcher, clock=cluster.clock, sleep=cluster.advance, worker="test")
    dispatcher.bind(pipeline.run)
    try:
        yield World(pipeline, dispatcher, cluster)
    finally:
        container.close()


def _waiting(world: World, incident_id: int) -> Action | None:
    with world.pipeline.container.uow() as uow:
        action = uow.session.scalars(select(Action).where(
            Action.incident_id == incident_id, Action.status == "awaiting_approval")).first()
        if action is not None:
            uow.session.expunge(action)
        return action


def _read(world: World, model: Any, *where: Any) -> list[Any]:
    with world.pipeline.container.uow() as uow:
        rows = list(uow.session.scalars(select(model).where(*where)))
        uow.session.expunge_all()
        return rows


def _incident(world: World, incident_id: int) -> Incident:
    (incident,) = _read(world, Incident, Incident.id == incident_id)
    return incident


def _timeline(world: World, incident_id: int) -> list[str]:
    return [e.message for e in _read(world, IncidentEvent, IncidentEvent.incident_id == incident_id)]


def _leases(world: World, node: str) -> list[NodeLease]:
    return _read(world, NodeLease, NodeLease.hostname == node, NodeLease.released_at.is_(None))


def _remediated(world: World, node: str = NODE, **incident: Any) -> tuple[int, NodeProbation]:
    """An incident on `node` whose plan (cordon, drain, reset for a GSP timeout) ran and was verified."""
    incident.setdefault("evidence", {"xid": 119})
    incident_id = open_incident(world.pipeline.container, incident.pop("kind", "xid"), node=node, **incident)
    world.settle(incident_id)
    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == node)
    return incident_id, probation


def _new_finding(world: World, node: str, gpu: int, ts: float, **evidence: Any) -> None:
    finding = Finding(ts=ts, hostname=node, gpu=gpu, uuid=f"GPU-{node}-{gpu}", kind="xid", severity="critical",
                      score=1.0, detector="test", evidence=evidence)
    with world.pipeline.container.uow() as uow:
        ingest_findings(uow.session, [finding], fleet_nodes=8, now=datetime.fromtimestamp(ts, tz=UTC))
        uow.commit()


def test_a_healthy_node_returns_after_its_probation_and_frees_the_node_budget(world: World) -> None:
    incident_id, probation = _remediated(world)
    assert _incident(world, incident_id).status == "resolved"
    assert world.cluster.nodes[NODE].unschedulable and world.cluster.nodes[NODE].cordoned_by_gpuops
    assert len(_leases(world, NODE)) == 1 and probation.status == "probation" and probation.gpu == 2

    # While the node is out, another node's incident gets no node action: it waits for gpuops' node to come back.
    blocked = open_incident(world.pipeline.container, "nvlink", node=OTHER)
    world.settle(blocked)
    assert _read(world, Action, Action.incident_id == blocked) == []
    assert _incident(world, blocked).held_until is not None
    assert any("waits for the budget" in m and "1 node(s) out (limit 1)" in m for m in _timeline(world, blocked))

    # Not a moment before the probation's data time has been examined (the clock alone does not end it) ...
    world.cluster.now += PROBATION_S + 60
    assert world.sweep() == []
    world.examined(-120.0)
    assert world.sweep() == []
    assert world.cluster.nodes[NODE].unschedulable
    # ... and then gpuops lifts its own cordon, under policy, and releases the lease.
    world.examined(120.0)
    assert world.sweep() == [probation.id]
    node = world.cluster.nodes[NODE]
    assert not node.unschedulable and not node.cordoned_by_gpuops
    assert _leases(world, NODE) == []
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned" and all(c["ok"] for c in returned.checks)
    (uncordon,) = _read(world, Action, Action.id == returned.return_action_id)
    assert uncordon.runbook == "uncordon_node" and uncordon.status == "succeeded"
    assert uncordon.verdict["gate"] == "auto" and uncordon.incident_id == incident_id
    assert _incident(world, incident_id).status == "resolved"
    assert any(m.startswith("returned to service after 31 min of probation") for m in _timeline(world, incident_id))
    kinds = {e.kind for e in _read(world, AuditEvent, AuditEvent.incident_id == incident_id)}
    assert {"probation.started", "probation.passed", "probation.returned", "action.succeeded"} <= kinds

    # The budget is free again: the waiting incident's next recheck takes its node action.
    world.examined(BUDGET_RECHECK_S + 60)
    world.sweep()
    cordon = _read(world, Action, Action.incident_id == blocked, Action.runbook == "cordon_node")
    assert [a.status for a in cordon] == ["succeeded"]
    assert world.cluster.nodes[OTHER].unschedulable


def test_a_new_error_during_probation_keeps_the_node_out_with_a_ticket(world: World) -> None:
    incident_id, probation = _remediated(world)
    world.examined(600.0)
    assert world.sweep() == []
    _new_finding(world, NODE, 2, world.cluster.now - 30, xid=119)

    assert world.sweep() == [probation.id]  # at once: it need not wait out the probation
    assert world.cluster.nodes[NODE].unschedulable and world.cluster.nodes[NODE].cordoned_by_gpuops
    assert len(_leases(world, NODE)) == 1
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and [c["name"] for c in kept.checks if not c["ok"]] == ["no_new_errors"]
    incident = _incident(world, incident_id)
    assert incident.status == "escalated"
    assert any("probation failed: no_new_errors" in m for m in _timeline(world, incident_id))
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    assert ticket.gpu == 2 and ticket.incident_id == incident_id and ticket.status == "open"
    assert "no_new_errors" in ticket.evidence["evidence"] and "failed probation" in ticket.summary
    # Nothing later returns it: its probation is over.
    world.examined(PROBATION_S)
    assert world.sweep() == [] and world.cluster.nodes[NODE].unschedulable


def test_an_exporter_falling_silent_during_probation_is_no_new_error(world: World) -> None:
    """A node's exporter missing a scrape or two makes every GPU of the node silent at once: a suspicion no
    second signal confirmed, which says nothing about the GPUs the remediation fixed."""
    incident_id, probation = _remediated(world)
    world.examined(600.0)
    assert world.sweep() == []
    ts = world.cluster.now - 30
    assert ts > probation.started_at.replace(tzinfo=UTC).timestamp()
    silent = Finding(ts=ts, hostname=NODE, gpu=None, uuid=None, kind="gpu_lost", severity="warning", score=0.3,
                     detector="rules.gpu_lost", evidence={"all_gpus": 8, "silent_s": 45.0, "corroborated": False})
    with world.pipeline.container.uow() as uow:
        ingest_findings(uow.session, [silent], fleet_nodes=8, now=datetime.fromtimestamp(ts, tz=UTC))
        uow.commit()
    assert world.sweep() == []  # nothing to examine early
    world.cluster.now += PROBATION_S + 60
    world.examined(120.0)
    assert world.sweep() == [probation.id]
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned" and all(c["ok"] for c in returned.checks)
    assert not world.cluster.nodes[NODE].unschedulable and _incident(world, incident_id).status == "resolved"


def _fails_again(world: World) -> tuple[int, NodeProbation]:
    """GPU 2's GSP timeout is reset and the node returns whole; two days later the same GPU fails again, is reset
    again, and that second probation is examined: the second incident and its probation."""
    first, probation = _remediated(world)
    world.cluster.now += PROBATION_S + 60
    world.examined(120.0)
    assert world.sweep() == [probation.id]
    assert _read(world, NodeProbation, NodeProbation.id == probation.id)[0].status == "returned"
    assert not world.cluster.nodes[NODE].unschedulable  # a fix that held: returned whole, nothing fenced

    world.examined(2 * 86400.0)
    again = open_incident(world.pipeline.container, "ecc", node=NODE, evidence={"xid": 48, "dbe": 1})
    assert again != first
    world.settle(again)
    (second,) = _read(world, NodeProbation, NodeProbation.incident_id == again)
    world.cluster.now += PROBATION_S + 60
    world.examined(120.0)
    assert world.sweep() == [second.id]
    return again, second


def test_a_gpu_that_fails_again_after_its_return_is_kept_out_for_replacement(world: World) -> None:
    """A GPU reset fixed the GPU and it went back to service; days later the same GPU fails again and is reset
    again. Its second probation keeps it out with a ticket: the fix does not hold (a double-bit error that
    recurs after its row was remapped is a failing part)."""
    again, second = _fails_again(world)
    (kept,) = _read(world, NodeProbation, NodeProbation.id == second.id)
    assert kept.status == "kept_out"
    (failed,) = [c for c in kept.checks if not c["ok"]]
    assert failed["name"] == "fault_fixed" and f"{NODE} GPU 2 failed again" in failed["detail"]
    assert world.cluster.nodes[NODE].unschedulable and _incident(world, again).status == "escalated"
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.incident_id == again)
    assert ticket.gpu == 2 and ticket.status == "open"


def test_a_gpu_that_fails_again_after_its_return_is_fenced_and_its_node_returns_with_the_rest(
        db_url: str, tmp_path: Path) -> None:
    """The same failing part with fences on: the GPU needs replacing, so it is fenced off and ticketed, and the
    node serves with its other GPUs instead of waiting out the repair; nobody needs to be paged for it."""
    world = next(_world(db_url, tmp_path, FENCING))
    again, second = _fails_again(world)
    assert [r.kind for r in world.cluster.requests.values()] == ["GPUReset", "GPUReset", "GPUFence"]
    (returned,) = _read(world, NodeProbation, NodeProbation.id == second.id)
    assert returned.status == "returned" and returned.fence_action_id is not None
    failed = {c["name"]: c["detail"] for c in returned.checks if not c["ok"]}
    assert f"{NODE} GPU 2 failed again" in failed["fault_fixed"] and "GPU 2 is fenced off" in str(returned.checks)
    node = world.cluster.nodes[NODE]
    assert not node.unschedulable and node.gpu_allocatable == node.gpu_capacity - 1
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.incident_id == again)
    assert ticket.gpu == 2 and ticket.status == "open"
    assert _incident(world, again).status == "resolved"


def test_a_node_a_human_cordoned_is_never_uncordoned(world: World) -> None:
    world.cluster.nodes[NODE] = dataclasses.replace(world.cluster.nodes[NODE], unschedulable=True)
    incident_id, probation = _remediated(world)
    assert not world.cluster.nodes[NODE].cordoned_by_gpuops

    world.examined(PROBATION_S + 60)
    assert world.sweep() == [probation.id]
    assert world.cluster.nodes[NODE].unschedulable
    assert _read(world, Action, Action.runbook == "uncordon_node") == []
    (released,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert released.status == "released" and "someone else cordoned it" in released.reason
    assert _incident(world, incident_id).status == "resolved"


def test_a_double_bit_error_only_drained_away_keeps_the_node_out_with_a_ticket(world: World) -> None:
    incident_id = open_incident(world.pipeline.container, "ecc", node=NODE,
                                evidence={"metric": "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "value": 1.0, "xid": 48})
    world.settle(incident_id, reject="reset_gpu")  # the on-call keeps the GPU as it is: only a drain ran
    assert _incident(world, incident_id).status == "escalated"
    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)

    world.examined(PROBATION_S + 60)
    assert world.sweep() == [probation.id]
    assert world.cluster.nodes[NODE].unschedulable and len(_leases(world, NODE)) == 1
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out"
    (failed,) = [c for c in kept.checks if not c["ok"]]
    assert failed["name"] == "fault_fixed" and "double-bit ECC error" in failed["detail"]
    assert "only cordon_node, drain_node ran" in failed["detail"]
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    assert ticket.gpu == 2 and ticket.evidence["fault"].startswith("double-bit ECC error")
    assert _incident(world, incident_id).status == "escalated"
    assert any("probation failed: fault_fixed" in m for m in _timeline(world, incident_id))


def test_without_auto_approval_the_return_waits_for_a_human(db_url: str, tmp_path: Path) -> None:
    policy = POLICY.model_copy(update={"auto_approve": frozenset({"cordon_node"})})
    world = next(_world(db_url, tmp_path, policy))
    _, probation = _remediated(world)
    world.examined(PROBATION_S + 60)
    assert world.sweep() == [probation.id]
    (waiting,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert waiting.status == "returning" and world.cluster.nodes[NODE].unschedulable
    (uncordon,) = _read(world, Action, Action.id == waiting.return_action_id)
    assert uncordon.status == "awaiting_approval" and uncordon.approvals_required == 1

    world.pipeline.decide(action_id=uncordon.id, approver=Approver(ALICE, "cli", True), decision="approve",
                          plan_hash=uncordon.plan_hash, reason="looks healthy")
    assert [s for s, _ in world.dispatcher.queued()] == [Step.RETURN_NODE]
    world.dispatcher.drain()
    assert not world.cluster.nodes[NODE].unschedulable and _leases(world, NODE) == []
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned"


def test_a_row_remap_failure_whose_plan_opened_a_ticket_stays_out_on_that_ticket(world: World) -> None:
    incident_id = open_incident(world.pipeline.container, "row_remap", node=NODE,
                                evidence={"metric": "DCGM_FI_DEV_ROW_REMAP_FAILURE", "value": 1.0})
    world.settle(incident_id)  # cordon, drain, open_hardware_ticket
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)

    world.examined(PROBATION_S + 60)
    assert world.sweep() == [probation.id]
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and f"hardware ticket {ticket.id} is already open" in kept.reason
    assert "row-remap failure: no remediation fixes it" in kept.reason
    assert len(_read(world, HardwareTicket, HardwareTicket.hostname == NODE)) == 1
    assert world.cluster.nodes[NODE].unschedulable and len(_leases(world, NODE)) == 1
    assert _incident(world, incident_id).status == "resolved"  # its plan handed the GPU to the vendor already


def test_a_fault_no_remediation_fixes_is_kept_out_once_its_plan_is_done_and_frees_the_node_budget(
        world: World) -> None:
    incident_id = open_incident(world.pipeline.container, "row_remap", node=NODE,
                                evidence={"metric": "DCGM_FI_DEV_ROW_REMAP_FAILURE", "value": 1.0})
    world.settle(incident_id)  # cordon, drain, open_hardware_ticket
    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)

    assert world.sweep() == [probation.id]  # no probation to wait out: only a new part returns it
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and "row-remap failure: no remediation fixes it" in kept.reason
    assert world.cluster.nodes[NODE].unschedulable

    # The one-node budget is not held for a node that waits for the humans: the next node's remediation runs now.
    other = open_incident(world.pipeline.container, "xid", node=OTHER, evidence={"xid": 119})
    world.settle(other)
    assert world.cluster.nodes[OTHER].unschedulable and _leases(world, OTHER)
    assert "reset_gpu" in {a.runbook for a in _read(world, Action, Action.incident_id == other,
                                                     Action.status == "succeeded")}


def _row_remap_failure(world: World) -> tuple[int, NodeProbation]:
    incident_id = open_incident(world.pipeline.container, "row_remap", node=NODE,
                                evidence={"metric": "DCGM_FI_DEV_ROW_REMAP_FAILURE", "value": 1.0})
    world.settle(incident_id)  # cordon, drain, open_hardware_ticket
    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)
    return incident_id, probation


def test_a_gpu_that_needs_replacing_is_fenced_off_and_its_node_returns_with_the_rest(
        db_url: str, tmp_path: Path) -> None:
    world = next(_world(db_url, tmp_path, FENCING))
    incident_id, probation = _row_remap_failure(world)
    assert world.cluster.nodes[NODE].gpu_allocatable == 8  # the device plugin would give GPU 2 to the next pod

    assert world.sweep() == [probation.id]  # decided once its plan is done: fence, then uncordon, in one step
    (fence,) = _read(world, Action, Action.incident_id == incident_id, Action.runbook == "fence_gpu")
    assert fence.status == "succeeded" and fence.targets == [f"gpu/{NODE}/{probation.gpu}"]
    assert [r.kind for r in world.cluster.requests.values() if r.node == NODE] == ["GPUFence"]
    node = world.cluster.nodes[NODE]
    assert node.gpu_allocatable == 7 and not node.unschedulable and _leases(world, NODE) == []
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned" and returned.fence_action_id == fence.id
    assert {c["name"]: c["ok"] for c in returned.checks}["gpu_withheld"] is True
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)  # the plan's own, not a second one
    assert ticket.incident_id == incident_id and ticket.status == "open"
    assert _incident(world, incident_id).status == "resolved"
    assert any("fenced off" in m for m in _timeline(world, incident_id))
    assert any("returned to service" in m and f"without GPU {probation.gpu}" in m
               for m in _timeline(world, incident_id))


@pytest.mark.parametrize("lost_stays_lost", [False, True])
def test_a_fenced_gpu_offered_again_after_a_reboot_is_fenced_again_before_its_node_returns(
        db_url: str, tmp_path: Path, lost_stays_lost: bool) -> None:
    """The reboot reloads the driver, which lifts the fence. Where the rebooted GPU stays off the bus the node
    reports 7 GPUs again, as before the reboot, but a different 7: the fenced GPU is offered, the lost one not."""
    world = next(_world(db_url, tmp_path, FENCING))
    first, probation = _row_remap_failure(world)
    world.sweep()
    assert world.cluster.nodes[NODE].gpu_allocatable == 7 and not world.cluster.nodes[NODE].unschedulable

    world.examined(86400.0)  # a day later another GPU falls off the bus: cordon, drain, reboot
    second = open_incident(world.pipeline.container, "gpu_lost", node=NODE, gpu=5, evidence={"xid": 79})
    world.settle(second)
    assert "reboot_node" in {a.runbook for a in _read(world, Action, Action.incident_id == second,
                                                     Action.status == "succeeded")}
    _withhold(world, NODE, 1 if lost_stays_lost else 0)  # the fence is gone: GPU 2 is offered again
    (rebooted,) = _read(world, NodeProbation, NodeProbation.incident_id == second)
    world.examined(PROBATION_S + 60)
    assert world.sweep() == [rebooted.id]
    fences = [r for r in world.cluster.requests.values() if r.kind == "GPUFence"]
    assert [(r.node, r.gpu) for r in fences] == [(NODE, probation.gpu), (NODE, probation.gpu)]
    (returned,) = _read(world, NodeProbation, NodeProbation.id == rebooted.id)
    assert returned.status == "returned" and returned.fence_action_id is not None
    node = world.cluster.nodes[NODE]
    assert node.gpu_allocatable == (6 if lost_stays_lost else 7) and not node.unschedulable
    assert any(f"GPU {probation.gpu} fenced off" in m for m in _timeline(world, second))
    assert _incident(world, first).status == "resolved" and _incident(world, second).status == "resolved"
    tickets = sorted(t.gpu for t in _read(world, HardwareTicket, HardwareTicket.hostname == NODE))
    assert tickets == ([probation.gpu, 5] if lost_stays_lost else [probation.gpu])


def _node_agent_answers(world: World, monkeypatch: pytest.MonkeyPatch, kind: str, failure: str | None,
                        gpu_allocatable: int) -> None:
    """The node agent fails its `kind` requests with `failure`; or carries them out, after which `NODE` offers
    `gpu_allocatable` GPUs. Requests of other kinds finish as asked."""
    finish = world.cluster.finish_request

    def agent(name: str, phase: str = "Succeeded", message: str = "") -> Any:
        if world.cluster.requests[name].kind != kind:
            return finish(name, phase, message)
        if failure is not None:
            return finish(name, "Failed", failure)
        done = finish(name)
        world.cluster.nodes[NODE] = dataclasses.replace(world.cluster.nodes[NODE], gpu_allocatable=gpu_allocatable)
        return done

    monkeypatch.setattr(world.cluster, "finish_request", agent)


@pytest.mark.parametrize("how", ["drain refused", "plugin still offers it"])
def test_a_fence_the_node_agent_fails_keeps_the_node_out_on_its_ticket(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The agent fails the request, or says it succeeded while the device plugin still offers the GPU (its restart
    did not take): either way the fence is not verified and the node stays out."""
    world = next(_world(db_url, tmp_path, FENCING))
    _node_agent_answers(world, monkeypatch, "GPUFence", "Unable to set drain state: In use by another client"
                        if how == "drain refused" else None, gpu_allocatable=8)
    incident_id, probation = _row_remap_failure(world)
    world.sweep()
    (fence,) = _read(world, Action, Action.incident_id == incident_id, Action.runbook == "fence_gpu")
    why = "In use by another client" if how == "drain refused" else f"still offers GPU {probation.gpu}"
    assert fence.status == "failed" and why in (fence.error or "")
    world.sweep()
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and "row-remap failure: no remediation fixes it" in kept.reason
    assert world.cluster.nodes[NODE].unschedulable and world.cluster.nodes[NODE].gpu_allocatable == 8
    assert len(_read(world, HardwareTicket, HardwareTicket.hostname == NODE)) == 1
    assert any("not fenced" in m for m in _timeline(world, incident_id))


def test_a_fence_waits_for_a_human_where_policy_does_not_approve_it(db_url: str, tmp_path: Path) -> None:
    world = next(_world(db_url, tmp_path, POLICY.model_copy(update={"fence_gpus": True})))
    _, probation = _row_remap_failure(world)
    assert world.sweep() == [probation.id]
    (fencing,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    (fence,) = _read(world, Action, Action.id == fencing.fence_action_id)
    assert fencing.status == "fencing" and fence.status == "awaiting_approval"
    assert world.cluster.nodes[NODE].unschedulable and world.cluster.requests == {}

    world.pipeline.decide(action_id=fence.id, approver=Approver(ALICE, "cli", True), decision="approve",
                          plan_hash=fence.plan_hash, reason="swap it later")
    world.dispatcher.drain()
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned" and not world.cluster.nodes[NODE].unschedulable
    assert world.cluster.nodes[NODE].gpu_allocatable == 7


def _repaired(world: World, note: str) -> int:
    """The humans tell gpuops they repaired `NODE`; the id of the probation that follows."""
    with world.pipeline.container.uow() as uow:
        repaired = mark_repaired(uow.session, node=NODE, by=ALICE, note=note, config=world.pipeline.container.policy,
                                 now=datetime.fromtimestamp(world.cluster.now, tz=UTC))
        uow.commit()
        return repaired.id


def _withhold(world: World, node: str, gpus: int) -> None:
    """The device plugin withholds `gpus` of the node's GPUs (it marked them unhealthy, or they left the bus)."""
    info = world.cluster.nodes[node]
    world.cluster.nodes[node] = dataclasses.replace(info, gpu_allocatable=info.gpu_capacity - gpus)


def test_a_node_whose_failed_gpu_is_withheld_returns_with_the_rest_and_the_gpu_on_a_ticket(world: World) -> None:
    incident_id, probation = _remediated(world)  # GPU 2's GSP timeout: cordon, drain, reset
    _withhold(world, NODE, 1)  # the reset did not bring GPU 2 back: the device plugin gives it to nobody

    world.examined(PROBATION_S + 60)
    assert world.sweep() == [probation.id]
    # First the GPU's RMA request, then, in the same sweep, the uncordon once the ticket is open.
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    assert ticket.gpu == 2 and ticket.status == "open" and "withheld" in ticket.summary
    node = world.cluster.nodes[NODE]
    assert not node.unschedulable and _leases(world, NODE) == []
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned" and returned.ticket_action_id == ticket.action_id
    checks = {c["name"]: c["ok"] for c in returned.checks}
    assert checks["gpu_withheld"] and checks["gpus_present"] is False
    assert _incident(world, incident_id).status == "resolved"
    assert any("returned to service" in m and "without GPU 2" in m for m in _timeline(world, incident_id))
    assert len(_read(world, HardwareTicket, HardwareTicket.hostname == NODE)) == 1

    # The withheld GPU goes on reporting its fault, days later too: kept with its incident, nothing planned again.
    # Another GPU of the node failing is a fault of its own.
    world.cluster.now += 2 * 86400
    _new_finding(world, NODE, 2, world.cluster.now, xid=119)
    assert [i.id for i in _read(world, Incident)] == [incident_id]
    assert _incident(world, incident_id).status == "resolved"
    _new_finding(world, NODE, 5, world.cluster.now, xid=119)
    (other,) = [i for i in _read(world, Incident) if i.id != incident_id]
    assert other.gpu == 5 and other.status == "open"

    # The humans replace the GPU: the node gets it back through a fresh probation, the ticket closed.
    repaired_id = _repaired(world, "GPU 2 swapped")
    _withhold(world, NODE, 0)
    assert [t.status for t in _read(world, HardwareTicket, HardwareTicket.hostname == NODE)] == ["repaired"]
    world.examined(PROBATION_S + 60)
    assert world.sweep() == [repaired_id]
    (again,) = _read(world, NodeProbation, NodeProbation.id == repaired_id)
    assert again.status == "returned" and all(c["ok"] for c in again.checks)
    assert not world.cluster.nodes[NODE].unschedulable


def test_a_withheld_gpu_that_a_pod_holds_again_is_no_longer_kept_away_from_work(world: World) -> None:
    """The device plugin keeps a GPU's unhealthy mark only until it restarts; then it offers every GPU it finds.
    A finding on the withheld GPU while a pod holds it is the fault meeting work again: it reopens the incident,
    which plans for the node once more, instead of being filed away with it."""
    incident_id, _ = _remediated(world)
    _withhold(world, NODE, 1)
    world.examined(PROBATION_S + 60)
    world.sweep()
    assert not world.cluster.nodes[NODE].unschedulable

    world.cluster.now += 3600
    _new_finding(world, NODE, 2, world.cluster.now, xid=119)  # nothing runs on it: kept with the incident
    assert _incident(world, incident_id).status == "resolved"
    _withhold(world, NODE, 0)  # the plugin restarted and gives GPU 2 out again; a pod took it
    _new_finding(world, NODE, 2, world.cluster.now + 60, xid=119, pod_now="ml/train-3")
    assert [i.id for i in _read(world, Incident)] == [incident_id]
    assert _incident(world, incident_id).status == "open"
    assert any("recurred after resolution" in m for m in _timeline(world, incident_id))


def test_a_node_two_gpus_short_stays_out(world: World) -> None:
    incident_id, probation = _remediated(world)
    _withhold(world, NODE, 2)  # one more GPU than the incident's is gone: not explained by its fault

    world.examined(PROBATION_S + 60)
    assert world.sweep() == [probation.id]
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and "gpus_present: 6/8 GPUs allocatable" in kept.reason
    assert "gpu_withheld" not in {c["name"] for c in kept.checks}
    assert world.cluster.nodes[NODE].unschedulable and _incident(world, incident_id).status == "escalated"


def test_a_withheld_gpu_with_a_new_error_on_the_node_stays_out(world: World) -> None:
    incident_id, probation = _remediated(world)
    _withhold(world, NODE, 1)
    world.examined(600.0)
    _new_finding(world, NODE, 5, world.cluster.now - 30, xid=119)  # another GPU of the node fails meanwhile

    assert world.sweep() == [probation.id]
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and "no_new_errors" in kept.reason
    assert world.cluster.nodes[NODE].unschedulable and _incident(world, incident_id).status == "escalated"


def test_a_node_wide_fault_is_not_returned_short_of_a_gpu(world: World) -> None:
    _, probation = _remediated(world, gpu=None, kind="node_not_ready", evidence={})
    _withhold(world, NODE, 1)  # which GPU is gone, and why, nothing in the incident says

    world.examined(PROBATION_S + 60)
    world.sweep()
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and "gpus_present" in kept.reason
    assert world.cluster.nodes[NODE].unschedulable


def test_a_second_fault_on_a_node_short_of_a_withheld_gpu_is_judged_on_its_own_gpu(world: World) -> None:
    first, probation = _remediated(world)
    _withhold(world, NODE, 1)  # GPU 2 stays behind
    world.examined(PROBATION_S + 60)
    world.sweep()  # the GPU's ticket, then the uncordon
    assert not world.cluster.nodes[NODE].unschedulable

    # GPU 5 times out later; its reset fixes it. The node, still short of GPU 2 only, returns whole otherwise,
    # and GPU 5 is not taken for the withheld one.
    world.cluster.now += 86400
    second = open_incident(world.pipeline.container, "xid", node=NODE, gpu=5, evidence={"xid": 119})
    world.settle(second)
    (later,) = [p for p in _read(world, NodeProbation, NodeProbation.hostname == NODE) if p.id != probation.id]
    assert later.gpu == 5
    _new_finding(world, NODE, 2, world.cluster.now + 60, xid=119)  # the withheld GPU's fault, not a new error
    world.examined(PROBATION_S + 60)
    world.sweep()
    (returned,) = _read(world, NodeProbation, NodeProbation.id == later.id)
    assert returned.status == "returned", returned.reason
    checks = {c["name"]: c for c in returned.checks}
    assert checks["gpus_present"]["ok"] and "GPU 2 withheld" in checks["gpus_present"]["detail"]
    assert "gpu_withheld" not in checks
    assert [t.gpu for t in _read(world, HardwareTicket, HardwareTicket.hostname == NODE)] == [2]
    assert not world.cluster.nodes[NODE].unschedulable
    # GPU 2 still reports, still kept with the first incident.
    _new_finding(world, NODE, 2, world.cluster.now, xid=119)
    assert {i.id for i in _read(world, Incident)} == {first, second}


def test_a_node_short_of_a_withheld_gpu_failing_again_gets_a_ticket_of_its_own(world: World) -> None:
    first, probation = _remediated(world)
    _withhold(world, NODE, 1)  # GPU 2 stays behind on its ticket
    world.examined(PROBATION_S + 60)
    world.sweep()  # the GPU's ticket, then the uncordon
    world.cluster.now += 86400
    second = open_incident(world.pipeline.container, "xid", node=NODE, gpu=5, evidence={"xid": 119})
    world.settle(second)
    world.examined(600.0)
    _new_finding(world, NODE, 6, world.cluster.now - 30, xid=119)  # the node fails its probation on GPU 6

    world.sweep()
    (kept,) = [p for p in _read(world, NodeProbation, NodeProbation.hostname == NODE) if p.id != probation.id]
    assert kept.status == "kept_out" and "no_new_errors" in kept.reason
    tickets = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    assert sorted((t.gpu, t.incident_id) for t in tickets) == [(2, first), (5, second)]
    assert world.cluster.nodes[NODE].unschedulable and _incident(world, second).status == "escalated"


def test_a_withheld_gpu_whose_reset_a_human_refused_keeps_the_node_out(world: World) -> None:
    incident_id = open_incident(world.pipeline.container, "xid", node=NODE, evidence={"xid": 119})
    world.settle(incident_id, reject="reset_gpu")  # cordon and drain ran; the reset that fixes XID 119 did not
    assert _incident(world, incident_id).status == "escalated"
    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)
    _withhold(world, NODE, 1)

    world.examined(PROBATION_S + 60)
    world.sweep()
    (kept,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert kept.status == "kept_out" and "gpu_withheld" not in {c["name"] for c in kept.checks}
    assert world.cluster.nodes[NODE].unschedulable and _incident(world, incident_id).status == "escalated"


PORT_TAINT = "gpuops.io/fabric-degraded"


def _port_finding(world: World, device: str, ts: float, condition: str = "link_down") -> None:
    finding = Finding(ts=ts, hostname=NODE, gpu=None, uuid=None, kind="fabric", severity="critical", score=1.0,
                      detector=f"fabric.{condition}", evidence={"condition": condition, "device": device, "port": 1,
                                                                "hca": int(device.rpartition("_")[2])})
    with world.pipeline.container.uow() as uow:
        ingest_findings(uow.session, [finding], fleet_nodes=8, now=datetime.fromtimestamp(ts, tz=UTC))
        uow.commit()


@pytest.mark.parametrize("on", [True, False])
def test_a_node_whose_infiniband_port_waits_for_repair_serves_work_inside_the_node_under_a_taint(
        db_url: str, tmp_path: Path, on: bool) -> None:
    """One port down is the cable's, the transceiver's or the HCA's: no reset fixes it, and only work whose
    traffic crosses the port (a multi-node job's collectives) needs it. The node returns under a NoSchedule taint
    that such work does not tolerate, its ticket open; the port's later reports are filed with its incident; once
    the humans repaired it and the node passed its probation again, the taint is lifted."""
    world = next(_world(db_url, tmp_path, POLICY.model_copy(update={"return_without_port": on})))
    incident_id = open_incident(world.pipeline.container, "fabric", node=NODE, gpu=None,
                                evidence={"condition": "link_down", "device": "mlx5_3", "port": 1, "hca": 3})
    world.settle(incident_id)  # cordon, drain, open_hardware_ticket (naming the HCA)
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)
    world.cluster.now += 30
    _port_finding(world, "mlx5_3", world.cluster.now, "link_flap")  # its own port failing on is no new error

    assert world.sweep() == [probation.id]  # no probation to wait out: no reset brings a cable back
    (decided,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    node = world.cluster.nodes[NODE]
    if not on:
        assert decided.status == "kept_out" and node.unschedulable and not node.taints
        return
    assert decided.status == "returned" and {c["name"]: c["ok"] for c in decided.checks}["port_withheld"] is True
    assert not node.unschedulable and _leases(world, NODE) == []
    assert [(t.key, t.value, t.effect) for t in node.taints] == [(PORT_TAINT, "mlx5_3", "NoSchedule")]
    (uncordon,) = _read(world, Action, Action.incident_id == incident_id, Action.runbook == "uncordon_node")
    assert uncordon.status == "succeeded" and uncordon.parameters["taint_value"] == "mlx5_3"
    assert _read(world, HardwareTicket, HardwareTicket.hostname == NODE)[0].status == "open"  # the plan's ticket
    assert _incident(world, incident_id).status == "resolved"
    assert any("returned to service" in m and PORT_TAINT in m for m in _timeline(world, incident_id))

    # The port goes on reporting: filed with its incident, nothing planned again.
    world.cluster.now += 3600
    _port_finding(world, "mlx5_3", world.cluster.now, "link_flap")
    assert [i.id for i in _read(world, Incident)] == [incident_id]
    assert _incident(world, incident_id).status == "resolved"

    # The humans replace the cable: the ticket closes, and after a fresh probation the taint is lifted.
    repaired_id = _repaired(world, "cable swapped")
    assert [t.status for t in _read(world, HardwareTicket, HardwareTicket.id == ticket.id)] == ["repaired"]
    world.examined(PROBATION_S + 60)
    assert world.sweep() == [repaired_id]
    (again,) = _read(world, NodeProbation, NodeProbation.id == repaired_id)
    assert again.status == "returned", again.reason
    (lift,) = _read(world, Action, Action.runbook == "untaint_node")
    assert lift.status == "succeeded" and lift.targets == [f"node/{NODE}"]
    assert world.cluster.nodes[NODE].taints == () and not world.cluster.nodes[NODE].unschedulable

    # Repaired, the port's next fault is a fault again: its incident reopens.
    _port_finding(world, "mlx5_3", world.cluster.now + 60)
    assert _incident(world, incident_id).status == "open"


@pytest.mark.parametrize("how", ["gpu stays off", "reset request failed"])
def test_a_gpu_a_reset_did_not_bring_back_gets_a_reboot_then_its_node_returns_without_it(
        world: World, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A reset the node agent carried out, after which the node still offers one GPU fewer, is followed by a
    reboot (the driver reloads, the bus is walked again) rather than handed to a human; a GPU still missing then
    goes on a ticket and the node returns with the rest. A reset that failed itself goes to a human, as before."""
    _node_agent_answers(world, monkeypatch, "GPUReset", "GPU 2 is in use by another client"
                        if how == "reset request failed" else None, gpu_allocatable=7)  # GPU 2 not back
    incident_id = open_incident(world.pipeline.container, "xid", node=NODE, evidence={"xid": 74})
    world.settle(incident_id)  # cordon, drain, reset (and, where it ran without the GPU coming back, reboot)
    runs = {a.runbook: a.status for a in _read(world, Action, Action.incident_id == incident_id)}
    if how == "reset request failed":
        assert runs["reset_gpu"] == "failed" and "reboot_node" not in runs
        assert _incident(world, incident_id).status == "escalated"
        return
    assert runs["reset_gpu"] == "failed" and runs["reboot_node"] == "succeeded"
    assert [r.kind for r in world.cluster.requests.values() if r.node == NODE] == ["GPUReset", "NodeReboot"]
    assert _incident(world, incident_id).status == "resolved"
    assert world.cluster.nodes[NODE].unschedulable  # the reboot does not return it: the probation does

    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)
    world.examined(PROBATION_S + 60)
    assert world.sweep() == [probation.id]
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned" and {c["name"]: c["ok"] for c in returned.checks}["gpu_withheld"]
    (ticket,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE)
    assert ticket.gpu == 2 and ticket.status == "open"
    assert not world.cluster.nodes[NODE].unschedulable and world.cluster.nodes[NODE].gpu_allocatable == 7
    assert _incident(world, incident_id).status == "resolved"


def test_a_port_with_no_ticket_of_its_incident_gets_one_before_its_node_returns(db_url: str, tmp_path: Path) -> None:
    """The node never returns under the port taint without the port's RMA request: where the incident's own
    ticket is gone (closed by hand, or a plan that opened none), the probation opens one first."""
    world = next(_world(db_url, tmp_path, POLICY))
    incident_id = open_incident(world.pipeline.container, "fabric", node=NODE, gpu=None,
                                evidence={"condition": "link_down", "device": "mlx5_3", "port": 1, "hca": 3})
    world.settle(incident_id)
    with world.pipeline.container.uow() as uow:
        for ticket in uow.session.scalars(select(HardwareTicket).where(HardwareTicket.hostname == NODE)):
            ticket.status = "closed"
        uow.commit()
    (probation,) = _read(world, NodeProbation, NodeProbation.hostname == NODE)

    assert world.sweep() == [probation.id]
    (opened,) = _read(world, HardwareTicket, HardwareTicket.hostname == NODE, HardwareTicket.status == "open")
    assert opened.incident_id == incident_id and "InfiniBand mlx5_3 withheld" in opened.summary
    (returned,) = _read(world, NodeProbation, NodeProbation.id == probation.id)
    assert returned.status == "returned" and returned.ticket_action_id == opened.action_id
    node = world.cluster.nodes[NODE]
    assert not node.unschedulable and [t.key for t in node.taints] == [PORT_TAINT]


def test_a_gpu_isolated_in_service_frees_its_node_at_once_and_its_later_reports_stay_with_its_incident(
        db_url: str, tmp_path: Path) -> None:
    """Someone has a node cordoned, so the healthy-GPU floor (85 % of 64: 55) refuses the drain of a node whose GPU
    has an SBE storm; the plan narrows to the GPU: isolate_gpu moves only the job's pod on that GPU, fences it and
    uncordons, and the ticket follows. The node holds no lease and waits on no probation: it never left service.
    The double-bit error the GPU was heading for is filed with its incident, not paged again."""
    policy = FENCING.model_copy(update={"max_nodes_out": 2, "min_healthy_gpu_fraction": 0.85})
    world = next(_world(db_url, tmp_path, policy))
    world.cluster.nodes[THIRD] = dataclasses.replace(world.cluster.nodes[THIRD], unschedulable=True)
    incident_id = open_incident(world.pipeline.container, "ecc", node=OTHER, gpu=4,
                                evidence={"metric": "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "rate_per_s": 2.0})
    world.settle(incident_id)
    runs = [(a.runbook, a.targets, a.status) for a in _read(world, Action, Action.incident_id == incident_id)]
    assert runs == [("drain_node", [f"node/{OTHER}"], "denied"),
                    ("isolate_gpu", [f"gpu/{OTHER}/4"], "succeeded"),
                    ("open_hardware_ticket", [f"node/{OTHER}"], "succeeded")], runs
    assert _incident(world, incident_id).status == "resolved"
    node = world.cluster.nodes[OTHER]
    assert not node.unschedulable and node.gpu_allocatable == node.gpu_capacity - 1
    assert [r.kind for r in world.cluster.requests.values()] == ["GPUFence"]
    assert "evict train/llm-5-4" in "\n".join(executed(world.cluster.journal))
    assert "evict train/llm-5-0" not in "\n".join(executed(world.cluster.journal))  # its other GPUs kept working
    assert _leases(world, OTHER) == []
    (isolated,) = _read(world, NodeProbation, NodeProbation.hostname == OTHER)
    assert isolated.status == "returned" and isolated.gpu == 4 and isolated.fence_action_id is not None

    _new_finding(world, OTHER, 4, world.cluster.now + 600, xid=48)
    with world.pipeline.container.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Incident)) == 1
