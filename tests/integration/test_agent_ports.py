"""The core's implementation of the agent's ports on the real store (SQLite and PostgreSQL): incident snapshots,
lifecycle moves, timeline and audit entries, LLM usage, a node's history; the agent's errors translated into
the core's at its entry points; and the status moves an action causes made once, by the execution side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from agent.errors import IncidentNotFound
from agent.runner import resume, start
from gpuops.agent_wiring import resume_incident, start_incident
from gpuops.errors import ConfigError, NotFound
from gpuops.incidents.agent_ports import StoreEvidence, StoreIncidents
from gpuops.store.models import Action, AuditEvent, Incident, IncidentEvent
from gpuops.wiring import Container
from tests.agent.helpers import T0, approve, graph_on, open_incident
from tests.agent.world import build_context

NOW = datetime.fromtimestamp(T0, tz=UTC) + timedelta(minutes=5)


def test_the_snapshot_carries_what_triage_reads(container: Container) -> None:
    incident_id = open_incident(container, "xid", evidence={"xid": 79}, details={"deployment": "serve/chat"})
    snap = StoreIncidents(container.uow).snapshot(incident_id)
    assert (snap.id, snap.hostname, snap.gpu, snap.xid, snap.status, snap.closed) == (
        incident_id, "gpu-node-003", 2, 79, "open", False)
    assert snap.opened_ts == T0 and snap.details["deployment"] == "serve/chat"
    assert set(snap.to_json()) == {"id", "scope", "family", "hostname", "gpu", "severity", "status", "title",
                                   "details", "evidence", "xid", "opened_at", "opened_ts", "fault_gpu"}
    assert snap.fault_gpu == 2  # a GPU incident's own GPU
    with pytest.raises(IncidentNotFound):
        StoreIncidents(container.uow).snapshot(incident_id + 100)


def test_moves_follow_the_lifecycle_and_a_repeat_is_harmless(container: Container) -> None:
    incidents = StoreIncidents(container.uow)
    incident_id = open_incident(container, "thermal")
    assert incidents.move(incident_id, "investigating", reason="test", actor="agent", now=NOW)
    assert not incidents.move(incident_id, "investigating", reason="again", actor="agent", now=NOW)
    assert not incidents.move(incident_id, "verifying", reason="not allowed", actor="agent", now=NOW)
    assert incidents.move(incident_id, "resolved", reason="done", actor="agent", now=NOW)
    snap = incidents.snapshot(incident_id)
    assert snap.status == "resolved" and snap.closed


def test_records_and_llm_usage_reach_the_timeline_and_the_audit(container: Container) -> None:
    incidents = StoreIncidents(container.uow)
    incident_id = open_incident(container, "thermal")
    incidents.record(incident_id, kind="agent.note", message="x" * 3000, data={"k": 1}, actor="agent", now=NOW)
    assert incidents.llm_calls(incident_id) == 0
    incidents.add_llm_usage(incident_id, {"calls": 1, "total_tokens": 100, "cost_usd": 0.0012})
    total = incidents.add_llm_usage(incident_id, {"calls": 2, "total_tokens": 50})
    assert total["calls"] == 3 and total["total_tokens"] == 150 and total["cost_usd"] == pytest.approx(0.0012)
    assert incidents.llm_calls(incident_id) == 3
    with container.uow() as uow:
        event = uow.session.scalars(select(IncidentEvent).where(IncidentEvent.kind == "agent.note")).one()
        audit = uow.session.scalars(select(AuditEvent).where(AuditEvent.kind == "agent.note")).one()
        assert len(event.message) == 2000 and event.data == {"k": 1}
        assert audit.actor == "agent" and audit.data["k"] == 1 and len(audit.data["message"]) == 2000


def _earlier(container: Container, node: str, opened_at: datetime, *actions: str) -> int:
    with container.uow() as uow:
        incident = Incident(dedup_key=f"test:{node}:{opened_at.isoformat()}", scope="gpu", family="thermal",
                            hostname=node, gpu=1, status="resolved", severity="warning", title="earlier",
                            opened_at=opened_at)
        uow.session.add(incident)
        uow.session.flush()
        for i, runbook in enumerate(actions):
            uow.session.add(Action(incident_id=incident.id, runbook=runbook, plan_hash="h", status="succeeded",
                                   idempotency_key=f"test-{incident.id}-{i}"))
        uow.commit()
        return incident.id


def test_the_history_lists_other_incidents_on_the_node_newest_first(container: Container) -> None:
    current = open_incident(container, "ecc", gpu=2)
    older = _earlier(container, "gpu-node-003", NOW - timedelta(days=3), "cordon_node", "drain_node")
    newer = _earlier(container, "gpu-node-003", NOW - timedelta(days=1))
    _earlier(container, "gpu-node-003", NOW - timedelta(days=40))
    _earlier(container, "gpu-node-005", NOW - timedelta(days=1))
    evidence = StoreEvidence(container.uow)
    past = evidence.incidents_on_node("gpu-node-003", since=NOW - timedelta(days=30), excluding=current)
    assert [p.id for p in past] == [newer, older]
    assert [(a.runbook, a.status) for a in past[1].actions] == [("cordon_node", "succeeded"),
                                                                 ("drain_node", "succeeded")]
    assert past[1].to_json()["actions"][0] == {"runbook": "cordon_node", "status": "succeeded"}
    assert evidence.incidents_on_node("gpu-node-003", since=NOW - timedelta(days=30), excluding=current,
                                      limit=1)[0].id == newer


def test_the_core_entry_points_raise_the_cores_errors(container: Container, tmp_path: Path) -> None:
    ctx = build_context(container, tmp_path / "journal")
    with pytest.raises(NotFound, match="does not exist"):
        start_incident(container, 12345, ctx)
    incident_id = open_incident(container, "thermal")
    with pytest.raises(NotFound, match="no agent thread"):
        resume_incident(container, incident_id, {"decision": "approve"}, ctx)
    unusable = SimpleNamespace(settings=SimpleNamespace(database_url="mysql://db.example/gpuops"))
    with pytest.raises(ConfigError, match="use sqlite or postgresql"):
        start_incident(unusable, incident_id, ctx)


def test_the_execution_side_alone_moves_the_incident_through_an_action(container: Container, tmp_path: Path) -> None:
    ctx = build_context(container, tmp_path / "journal")
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        waiting = start(graph, ctx, incident_id).waiting_for
        assert waiting is not None and waiting["runbook"] == "cordon_node"
        approve(container, waiting["action_id"])
        after = resume(graph, ctx, incident_id)
    assert after.waiting_for is not None and after.waiting_for["runbook"] == "drain_node", after
    assert [e["status"] for e in after.executions] == ["succeeded"]
    with container.uow() as uow:
        moves = [(e.kind, e.data["actor"]) for e in uow.session.scalars(
            select(IncidentEvent).where(IncidentEvent.incident_id == incident_id, IncidentEvent.kind.like("status.%"))
            .order_by(IncidentEvent.id))]
    assert moves == [("status.investigating", "agent"), ("status.awaiting_approval", "rules"),
                     ("status.executing", "executor"), ("status.verifying", "executor"),
                     ("status.investigating", "agent"), ("status.awaiting_approval", "rules")]
