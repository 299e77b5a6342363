"""Incident ownership on the real store (SQLite and PostgreSQL): acknowledge, assign, notes, manual resolution,
re-planning after a rejection through the real agent graph and policy, silences and maintenance windows (policy
denies any action on a node in maintenance; its NotReady opens nothing that pages). Every change is one audit
record naming the person, a viewer is refused (and audited), and the chain still verifies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.runner import resume, start
from detectors.findings import Finding
from gpuops.errors import Conflict, NotFound
from gpuops.execution.approvals import NotAuthorised
from gpuops.incidents import ownership as own
from gpuops.incidents.service import ingest_findings
from gpuops.store.audit import verify_chain
from gpuops.store.models import Action, AuditEvent, Incident, IncidentEvent
from gpuops.wiring import Container
from tests.agent.helpers import T0, approve, graph_on, open_incident
from tests.agent.world import build_context, executed

NOW = datetime.fromtimestamp(T0, tz=UTC) + timedelta(minutes=5)
ALICE = own.Actor("alice", "cli", True)
VERA = own.Actor("vera", "dashboard", False, refused_because="role viewer; only approver or admin may (GPUOPS_USERS)")
USERS = {"alice", "april", "vera"}


def _incident(container: Container, incident_id: int) -> Incident:
    with container.uow() as uow:
        incident = uow.session.get(Incident, incident_id)
        assert incident is not None
        return incident


def _audit(container: Container, kind: str) -> list[AuditEvent]:
    with container.uow() as uow:
        return list(uow.session.scalars(select(AuditEvent).where(AuditEvent.kind == kind).order_by(AuditEvent.seq)))


def _timeline(container: Container, incident_id: int, kind: str) -> list[IncidentEvent]:
    with container.uow() as uow:
        return list(uow.session.scalars(select(IncidentEvent).where(
            IncidentEvent.incident_id == incident_id, IncidentEvent.kind == kind).order_by(IncidentEvent.id)))


def _chain_ok(container: Container) -> None:
    with container.uow() as uow:
        report = verify_chain(uow.session)
    assert report.ok, report.as_dict()


def _do(container: Container, actor: own.Actor, change: object, incident_id: int | None = None) -> object:
    return own.perform(container.uow, actor, what="test", incident_id=incident_id,
                       change=lambda session: change(session))  # type: ignore[operator]


def test_acknowledge_assign_and_note_are_each_one_timeline_entry_and_one_audit_record(container: Container) -> None:
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    change = _do(container, ALICE, lambda s: own.acknowledge(s, incident_id=incident_id, actor=ALICE, now=NOW))
    again = _do(container, ALICE, lambda s: own.acknowledge(s, incident_id=incident_id, actor=ALICE, now=NOW))
    assert change.changed and not again.changed  # type: ignore[attr-defined]
    incident = _incident(container, incident_id)
    assert (incident.acknowledged_by, incident.acknowledged_at) == ("alice", NOW)
    assert [e.actor for e in _audit(container, "incident.acknowledged")] == ["alice"]

    _do(container, ALICE, lambda s: own.assign(s, incident_id=incident_id, assignee="april", actor=ALICE, now=NOW,
                                               is_user=USERS.__contains__))
    with pytest.raises(own.InvalidInput, match="not a dashboard user"):
        _do(container, ALICE, lambda s: own.assign(s, incident_id=incident_id, assignee="mallory", actor=ALICE,
                                                   now=NOW, is_user=USERS.__contains__))
    assert _incident(container, incident_id).assignee == "april"
    assert [(e.actor, e.data["assignee"]) for e in _audit(container, "incident.assigned")] == [("alice", "april")]

    text = "<script>alert(1)</script> checked the DBE counters"
    _do(container, ALICE, lambda s: own.add_note(s, incident_id=incident_id, text=text, actor=ALICE, now=NOW))
    with pytest.raises(own.InvalidInput, match="empty"):
        _do(container, ALICE, lambda s: own.add_note(s, incident_id=incident_id, text="  ", actor=ALICE, now=NOW))
    [note] = _timeline(container, incident_id, "note")
    assert (note.message, note.data["author"]) == (text, "alice")
    assert [(e.actor, e.data["text"]) for e in _audit(container, "incident.note")] == [("alice", text)]
    with pytest.raises(NotFound):
        _do(container, ALICE, lambda s: own.acknowledge(s, incident_id=999_999, actor=ALICE, now=NOW))
    _chain_ok(container)


def test_a_viewer_is_refused_nothing_changes_and_the_refusal_is_audited(container: Container) -> None:
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with pytest.raises(NotAuthorised, match="GPUOPS_USERS"):
        own.perform(container.uow, VERA, what="acknowledge incidents", incident_id=incident_id,
                    change=lambda s: own.acknowledge(s, incident_id=incident_id, actor=VERA, now=NOW))
    assert _incident(container, incident_id).acknowledged_at is None
    [refused] = _audit(container, "ownership.refused")
    assert (refused.actor, refused.incident_id, refused.data["what"]) == ("vera", incident_id, "acknowledge incidents")
    _chain_ok(container)


def test_manual_resolution_needs_a_reason_and_expires_the_actions_waiting_for_approval(
        container: Container, tmp_path: Path) -> None:
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        waiting = start(graph, build_context(container, tmp_path / "journal"), incident_id).waiting_for
    assert waiting is not None
    with pytest.raises(own.InvalidInput, match="reason"):
        _do(container, ALICE, lambda s: own.resolve(s, incident_id=incident_id, reason=" ", actor=ALICE, now=NOW))
    resolution = _do(container, ALICE, lambda s: own.resolve(s, incident_id=incident_id, reason="replaced the GPU",
                                                              actor=ALICE, now=NOW))
    assert resolution.stopped == [waiting["action_id"]]  # type: ignore[attr-defined]
    incident = _incident(container, incident_id)
    assert incident.status == "resolved" and incident.resolved_at == NOW
    with container.uow() as uow:
        action = uow.session.get(Action, waiting["action_id"])
        assert action is not None and action.status == "expired"
    [cancelled] = _audit(container, "action.cancelled")
    assert (cancelled.actor, cancelled.action_id) == ("alice", waiting["action_id"])
    assert [e.actor for e in _audit(container, "incident.resolved_by_hand")] == ["alice"]
    with pytest.raises(Conflict, match="no longer takes decisions"):
        approve(container, waiting["action_id"]).raise_for_refusal()
    _chain_ok(container)


def test_an_incident_with_a_running_action_is_not_resolved_by_hand(container: Container) -> None:
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with container.uow() as uow:
        uow.session.add(Action(incident_id=incident_id, runbook="drain_node", targets=["node/gpu-node-003"],
                               plan_hash="d" * 64, idempotency_key="running", status="executing"))
        uow.commit()
    with pytest.raises(Conflict, match="is running"):
        _do(container, ALICE, lambda s: own.resolve(s, incident_id=incident_id, reason="done", actor=ALICE, now=NOW))
    assert _incident(container, incident_id).status != "resolved"


def test_replan_after_a_rejection_proposes_no_rejected_step_and_goes_through_policy(
        container: Container, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    ctx = build_context(container, journal)
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with pytest.raises(Conflict, match="no rejected action"):
        _do(container, ALICE, lambda s: own.request_replan(s, incident_id=incident_id, reason="x", actor=ALICE,
                                                           now=NOW))
    with graph_on(container) as graph:
        first = start(graph, ctx, incident_id).waiting_for
        assert first is not None and first["runbook"] == "cordon_node"
        approve(container, first["action_id"], who="april", decision="reject")
        assert resume(graph, ctx, incident_id, {"action_id": first["action_id"]}).outcome == "escalated"
        _do(container, ALICE, lambda s: own.request_replan(
            s, incident_id=incident_id, reason="do not cordon: drain straight away", actor=ALICE, now=NOW))
        second = start(graph, ctx, incident_id).waiting_for
    assert second is not None and second["runbook"] == "drain_node" and second["action_id"] != first["action_id"]
    with container.uow() as uow:
        actions = list(uow.session.scalars(select(Action).where(Action.incident_id == incident_id)
                                           .order_by(Action.id)))
        assert [(a.runbook, a.status) for a in actions] == [("cordon_node", "rejected"),
                                                            ("drain_node", "awaiting_approval")]
        details = uow.session.get(Incident, incident_id).details  # type: ignore[union-attr]
    assert details["replan"]["rejected"][0]["runbook"] == "cordon_node"
    assert details["replan"]["rejected"][0]["by"] == "april"
    verdicts = [e for e in _audit(container, "policy.verdict") if e.action_id == second["action_id"]]
    assert verdicts and verdicts[0].data["gate"] == "one_approver"
    plans = _timeline(container, incident_id, "agent.plan")
    assert "cordon_node left out" in plans[-1].message and "drain straight away" in plans[-1].message
    assert [e.actor for e in _audit(container, "incident.replan_requested")] == ["alice"]
    assert executed(journal) == []
    _chain_ok(container)


def test_a_maintenance_window_denies_any_action_on_its_node(container: Container, tmp_path: Path) -> None:
    with container.uow() as uow:
        window = own.create_silence(uow.session, request=own.SilenceRequest(
            kind="maintenance", hostname="gpu-node-003", family=None, reason="swapping the PSU", duration="2h"),
            actor=ALICE, now=datetime.now(tz=UTC))
        uow.commit()
        window_id = window.id
    incident_id = open_incident(container, "xid", evidence={"xid": 79})
    with graph_on(container) as graph:
        report = start(graph, build_context(container, tmp_path / "journal"), incident_id)
    assert report.outcome == "escalated" and "maintenance_window" in report.reason
    with container.uow() as uow:
        [action] = uow.session.scalars(select(Action).where(Action.incident_id == incident_id))
        assert action.status == "denied"
        assert any(r.startswith(f"maintenance_window: gpu-node-003 is in maintenance window {window_id}")
                   for r in action.verdict["reasons"])
    assert executed(tmp_path / "journal") == []


def test_a_maintenance_windows_expected_effects_open_nothing_that_pages(container: Container) -> None:
    at = datetime.fromtimestamp(T0, tz=UTC)
    with container.uow() as uow:
        for host in ("gpu-node-001", "gpu-node-002", "gpu-node-003"):
            own.create_silence(uow.session, request=own.SilenceRequest(
                kind="maintenance", hostname=host, family=None, reason="firmware", starts_at=at - timedelta(hours=1),
                duration="3h"), actor=ALICE, now=at)
        findings = [Finding(ts=T0 + i, hostname=host, gpu=None, uuid=None, kind="node_not_ready", severity="critical",
                            score=1.0, detector="test", evidence={})
                    for i, host in enumerate(("gpu-node-001", "gpu-node-002", "gpu-node-003"))]
        result = ingest_findings(uow.session, findings, fleet_nodes=8, now=at)
        uow.commit()
    assert result.opened == [] and result.fleet == [] and len(result.suppressed) == 3
    with container.uow() as uow:
        statuses = set(uow.session.scalars(select(Incident.status)))
    assert statuses == {"suppressed"}


def test_silences_are_created_listed_and_expired_and_stay_as_history(container: Container) -> None:
    now = datetime.now(tz=UTC)
    with container.uow() as uow:
        silence = own.create_silence(uow.session, request=own.SilenceRequest(
            kind="silence", hostname=None, family="thermal", reason="cooling work in row 4", duration="90m"),
            actor=ALICE, now=now)
        later = own.create_silence(uow.session, request=own.SilenceRequest(
            kind="maintenance", hostname="gpu-node-005", family=None, reason="rack move",
            starts_at=now + timedelta(hours=1), ends_at=now + timedelta(hours=3)), actor=ALICE, now=now)
        uow.commit()
        ids = (silence.id, later.id)
    assert silence.ends_at - silence.starts_at == timedelta(minutes=90)
    with container.uow() as uow:
        assert [s.id for s in own.list_silences(uow.session, now=now, state="active")] == [ids[0]]
        assert [s.id for s in own.list_silences(uow.session, now=now, state="pending")] == [ids[1]]
        ended, changed = own.expire_silence(uow.session, silence_id=ids[0], actor=ALICE, now=now)
        again = own.expire_silence(uow.session, silence_id=ids[0], actor=ALICE, now=now)[1]
        uow.commit()
    assert changed and not again and ended.expired_by == "alice"
    with container.uow() as uow:
        views = [own.silence_view(s, now) for s in own.list_silences(uow.session, now=now)]
        with pytest.raises(NotFound):
            own.expire_silence(uow.session, silence_id=ids[0], actor=ALICE, now=now, kind="maintenance")
    assert [(v["id"], v["state"]) for v in views] == [(ids[1], "pending"), (ids[0], "expired")]
    assert [e.data["id"] for e in _audit(container, "silence.created")] == [ids[0]]
    assert [e.data["id"] for e in _audit(container, "maintenance.created")] == [ids[1]]
    assert [(e.actor, e.data["id"]) for e in _audit(container, "silence.expired")] == [("alice", ids[0])]
    _chain_ok(container)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"hostname": None, "family": None}, "matching everything"),
    ({"kind": "maintenance", "hostname": None, "family": "xid"}, "give its hostname"),
    ({"duration": "2 fortnights"}, "not like 90s"),
    ({"duration": "0h"}, "above zero"),
    ({"duration": "200d"}, "at most 90 days"),
    ({"duration": None}, "either an end time or a duration"),
    ({"family": "sunspots"}, "is not one of"),
    ({"hostname": "node one;drop"}, "not a node name"),
    ({"reason": ""}, "empty"),
    ({"kind": "hush"}, "kind 'hush'"),
    ({"starts_at": datetime(9999, 12, 31, 20, tzinfo=UTC), "duration": "1w"}, "within 366 days"),
])
def test_a_bad_silence_is_refused_with_what_is_wanted(container: Container, fields: dict[str, object],
                                                       problem: str) -> None:
    base: dict[str, object] = {"kind": "silence", "hostname": "gpu-node-001", "family": None, "reason": "why",
                               "duration": "2h"}
    with container.uow() as uow, pytest.raises(own.InvalidInput, match=problem):
        own.create_silence(uow.session, request=own.SilenceRequest(**{**base, **fields}),  # type: ignore[arg-type]
                           actor=ALICE, now=datetime.now(tz=UTC))
