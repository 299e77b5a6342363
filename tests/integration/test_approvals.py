"""Approvals bind to the plan hash, expire, need two distinct approvers for high risk, are idempotent on a
double click, and refuse anyone not authorised; every refusal is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gpuops.errors import Conflict
from gpuops.execution.approvals import Approver, NotAuthorised, decide, expire_pending, valid_approvals
from gpuops.store.models import Action, AuditEvent, Incident
from gpuops.wiring import Container

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HASH = "a" * 64
ALICE, BOB = Approver("alice", "dashboard", True), Approver("bob", "slack", True)


def pending(container: Container, required: int = 1) -> int:
    with container.uow() as uow:
        inc = Incident(dedup_key="k", scope="node", family="ecc", hostname="gpu-node-001", severity="critical",
                       title="t", status="awaiting_approval", opened_at=NOW, updated_at=NOW)
        uow.session.add(inc)
        uow.flush()
        action = Action(incident_id=inc.id, runbook="drain_node", targets=["node/gpu-node-001"], plan_hash=HASH,
                        idempotency_key="k1", status="awaiting_approval", approvals_required=required,
                        created_at=NOW)
        uow.session.add(action)
        uow.commit()
        return action.id


def run(container: Container, action_id: int, who: Approver, decision: str = "approve", plan_hash: str = HASH,
        now: datetime = NOW) -> tuple[str, int, bool]:
    with container.uow() as uow:
        outcome = decide(uow.session, action_id=action_id, approver=who, decision=decision, plan_hash=plan_hash,
                         reason="looked at the evidence", now=now, ttl_s=3600)
        uow.commit()
    outcome.raise_for_refusal()
    return outcome.status, outcome.approvals, outcome.duplicate


def audit_kinds(container: Container) -> list[str]:
    with container.uow() as uow:
        return list(uow.session.scalars(select(AuditEvent.kind).order_by(AuditEvent.seq)))


def test_one_approval_approves_a_medium_risk_plan(container: Container) -> None:
    action_id = pending(container)
    assert run(container, action_id, ALICE) == ("approved", 1, False)
    assert "approval.approve" in audit_kinds(container)


def test_high_risk_needs_two_distinct_approvers_and_a_double_click_counts_once(container: Container) -> None:
    action_id = pending(container, required=2)
    assert run(container, action_id, ALICE) == ("awaiting_approval", 1, False)
    assert run(container, action_id, ALICE) == ("awaiting_approval", 1, True)
    assert run(container, action_id, BOB) == ("approved", 2, False)


def test_unauthorised_person_is_refused_and_nothing_changes(container: Container) -> None:
    action_id = pending(container)
    with pytest.raises(NotAuthorised):
        run(container, action_id, Approver("mallory", "slack", False))
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None and action.status == "awaiting_approval" and action.approvals == []
    assert audit_kinds(container) == ["approval.refused"]


def test_decision_on_a_stale_plan_is_refused(container: Container) -> None:
    action_id = pending(container)
    with pytest.raises(Conflict, match="plan changed"):
        run(container, action_id, ALICE, plan_hash="b" * 64)
    assert audit_kinds(container) == ["approval.refused"]


def test_rejection_escalates_the_incident(container: Container) -> None:
    action_id = pending(container)
    assert run(container, action_id, BOB, decision="reject")[0] == "rejected"
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None and action.incident.status == "escalated"
    with pytest.raises(Conflict, match="no longer takes decisions"):
        run(container, action_id, ALICE)


def test_approvals_expire(container: Container) -> None:
    action_id = pending(container, required=2)
    run(container, action_id, ALICE)
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None
        assert len(valid_approvals(action, NOW + timedelta(minutes=30))) == 1
        assert valid_approvals(action, NOW + timedelta(hours=2)) == []


def test_a_request_nobody_answers_expires_and_escalates(container: Container) -> None:
    action_id = pending(container)
    with container.uow() as uow:
        assert expire_pending(uow.session, now=NOW + timedelta(minutes=30), ttl_s=3600) == []
        assert expire_pending(uow.session, now=NOW + timedelta(hours=2), ttl_s=3600) == [action_id]
        uow.commit()
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None and action.status == "expired" and action.incident.status == "escalated"


def test_a_request_whose_incident_was_folded_into_a_fleet_incident_expires_quietly(container: Container) -> None:
    action_id = pending(container)
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None
        action.incident.status = "suppressed"
        uow.commit()
    with container.uow() as uow:
        assert expire_pending(uow.session, now=NOW + timedelta(hours=2), ttl_s=3600) == [action_id]
        uow.commit()
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None and action.status == "expired" and action.incident.status == "suppressed"
