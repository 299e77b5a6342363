"""The soak before a node action, on the real store (SQLite and PostgreSQL), the real graph and policy: the
thread waits without proposing anything until every detection shard has examined the soak's telemetry, and
then acts, or, when the same fault reached other nodes meanwhile, leaves the node alone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from agent.runner import resume, start
from detectors.findings import Finding
from gpuops.detection import examined_until
from gpuops.execution.holds import STALE_AFTER_S, due_holds
from gpuops.incidents.service import ingest_findings
from gpuops.policy import PolicyConfig
from gpuops.store.models import Action, Incident, IncidentEvent
from gpuops.wiring import Container
from tests.agent.helpers import T0, graph_on, mark_examined, open_incident
from tests.agent.world import POLICY, build_context, default_cluster, executed

SOAK = POLICY.model_copy(update={"soak_s": 180.0})


def _examined(container: Container, until: float, *, shard: int = 0, shards: int = 1) -> None:
    with container.uow() as uow:
        mark_examined(uow.session, until, shard=shard, shards=shards)
        uow.commit()


def _due(container: Container, now: float, shards: int = 1) -> list[int]:
    with container.uow() as uow:
        return due_holds(uow.session, shards=shards, now=datetime.fromtimestamp(now, tz=UTC))


def _incident(container: Container, incident_id: int) -> Incident:
    with container.uow() as uow:
        incident = uow.session.get(Incident, incident_id)
        assert incident is not None
        uow.session.expunge(incident)
        return incident


def _actions(container: Container) -> list[tuple[str, str]]:
    with container.uow() as uow:
        return [(a.runbook, a.status) for a in uow.session.scalars(select(Action).order_by(Action.id))]


def _same_fault_on(container: Container, node: str, at: float) -> list[int]:
    finding = Finding(ts=at, hostname=node, gpu=0, uuid=f"GPU-{node}-0", kind="xid", severity="critical",
                      score=1.0, detector="test", evidence={"xid": 79})
    with container.uow() as uow:
        result = ingest_findings(uow.session, [finding], fleet_nodes=8)
        uow.commit()
    return result.touched


def _context(container: Container, tmp_path: Path, now: float, policy: PolicyConfig = SOAK):  # type: ignore[no-untyped-def]
    journal = tmp_path / "journal"
    cluster = default_cluster(journal)
    cluster.now = now
    return build_context(container, journal, cluster=cluster, policy=policy), journal


def test_a_node_action_waits_for_the_soaks_telemetry_then_goes_to_approval(container: Container,
                                                                          tmp_path: Path) -> None:
    ctx, journal = _context(container, tmp_path, T0 + 30)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    _examined(container, T0 + 30)
    with graph_on(container) as graph:
        first = start(graph, ctx, incident_id)
        assert first.outcome == "" and first.waiting_for is None
        assert first.held is not None and first.held["runbook"] == "cordon_node"
        until = datetime.fromtimestamp(T0 + 180, tz=UTC)
        assert _incident(container, incident_id).held_until == until
        assert _actions(container) == []  # nothing proposed while it soaks
        assert _due(container, T0 + 60) == []

        _examined(container, T0 + 120)  # resumed early: it waits again, still proposing nothing
        early = resume(graph, ctx, incident_id, {"hold": "over"})
        assert early.held is not None and _actions(container) == []

        _examined(container, T0 + 180)
        assert _due(container, T0 + 200) == [incident_id]
        after = resume(graph, ctx, incident_id, {"hold": "over"})
    assert after.held is None and after.waiting_for is not None
    assert after.waiting_for["runbook"] == "cordon_node"
    assert _incident(container, incident_id).held_until is None
    assert _actions(container) == [("cordon_node", "awaiting_approval")]
    assert executed(journal) == []
    with container.uow() as uow:
        held_events = list(uow.session.scalars(select(IncidentEvent).where(
            IncidentEvent.incident_id == incident_id, IncidentEvent.kind == "agent.held")))
    assert len(held_events) == 1, "one timeline entry for one hold, however often the thread is resumed"


def test_the_same_fault_on_another_node_during_the_soak_leaves_the_node_alone(container: Container,
                                                                               tmp_path: Path) -> None:
    ctx, journal = _context(container, tmp_path, T0 + 30)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        assert start(graph, ctx, incident_id).held is not None
        _same_fault_on(container, "gpu-node-005", T0 + 70)  # a rollout reaching the next node
        _examined(container, T0 + 200)
        assert incident_id in _due(container, T0 + 200)
        after = resume(graph, ctx, incident_id, {"hold": "over"})
    assert after.outcome == "escalated" and "common cause" in after.reason
    assert _actions(container) == [("cordon_node", "escalated")]  # proposed, blocked by policy
    assert executed(journal) == []
    with container.uow() as uow:  # the escalation names the policy rule that took it to a human
        (escalation,) = uow.session.scalars(select(IncidentEvent.message).where(
            IncidentEvent.incident_id == incident_id, IncidentEvent.kind == "status.escalated"))
    assert escalation.startswith("action ") and "(cordon_node): escalated: common cause suspected: xid also on " \
        "gpu-node-005" in escalation


def test_an_incident_folded_into_a_fleet_incident_during_the_soak_ends_without_action(container: Container,
                                                                                      tmp_path: Path) -> None:
    ctx, journal = _context(container, tmp_path, T0 + 30)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        assert start(graph, ctx, incident_id).held is not None
        for i, node in enumerate(("gpu-node-004", "gpu-node-005", "gpu-node-006")):
            _same_fault_on(container, node, T0 + 60 + 30 * i)
        assert _incident(container, incident_id).status == "suppressed"
        _examined(container, T0 + 200)
        assert _due(container, T0 + 200) == []  # a closed incident is not resumed by the sweep …
        after = resume(graph, ctx, incident_id, {"hold": "over"})  # … and a stray resume ends it
    assert after.outcome == "closed"
    assert _actions(container) == [] and executed(journal) == []


def test_a_hold_whose_telemetry_never_arrives_goes_to_a_human(container: Container, tmp_path: Path) -> None:
    late = T0 + 180 + STALE_AFTER_S + 1
    ctx, journal = _context(container, tmp_path, T0 + 30)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    _examined(container, T0 + 60, shard=0, shards=2)  # shard 1 never ran
    with graph_on(container) as graph:
        assert start(graph, ctx, incident_id).held is not None
        assert _due(container, T0 + 600, shards=2) == []
        assert _due(container, late, shards=2) == [incident_id]
        ctx.actions.deps.clock = lambda: late  # type: ignore[attr-defined]
        after = resume(graph, ctx, incident_id, {"hold": "over"})
    assert after.outcome == "escalated" and "detection has examined" in after.reason
    assert _actions(container) == [] and executed(journal) == []


def test_pod_actions_and_a_soak_of_zero_are_not_held(container: Container, tmp_path: Path) -> None:
    ctx, _ = _context(container, tmp_path, T0 + 30, policy=SOAK.model_copy(update={"soak_s": 0.0}))
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        report = start(graph, ctx, incident_id)
    assert report.held is None and report.waiting_for is not None
    ctx, _ = _context(container, tmp_path, T0 + 30)
    hung = open_incident(container, "hung_job", node="gpu-node-006", evidence={"job": "train/llm-pretrain"})
    with graph_on(container) as graph:
        report = start(graph, ctx, hung)  # a pod restart takes nothing from the node: no soak
    assert report.held is None and report.waiting_for is not None
    assert report.waiting_for["runbook"] == "restart_pod"


def test_examined_until_is_the_slowest_shard(container: Container) -> None:
    with container.uow() as uow:
        assert examined_until(uow.session, 2) is None
    _examined(container, T0 + 60, shard=0, shards=2)
    with container.uow() as uow:
        assert examined_until(uow.session, 2) is None  # shard 1 has examined nothing yet
    _examined(container, T0 + 30, shard=1, shards=2)
    _examined(container, T0 + 10, shard=1, shards=2)  # an older cycle never moves it back
    with container.uow() as uow:
        assert examined_until(uow.session, 2) == T0 + 30
