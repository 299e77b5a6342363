"""Migrations go from empty to head and back on SQLite and the real PostgreSQL; the models round-trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from gpuops.store import make_engine, migrate
from gpuops.store.models import Action, Approval, Base, FindingRecord, Incident, IncidentEvent
from gpuops.wiring import Container

TABLES = {"findings", "incidents", "incident_events", "actions", "approvals", "audit_events", "audit_head"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_to_head_and_down_to_empty_and_up_again(db_url: str) -> None:
    assert _tables(db_url) == set()
    migrate.upgrade(db_url)
    assert _tables(db_url) >= TABLES
    assert migrate.is_up_to_date(db_url)
    migrate.downgrade(db_url, "base")
    assert _tables(db_url) - {"alembic_version"} == set()
    assert not migrate.is_up_to_date(db_url)
    migrate.upgrade(db_url)
    assert _tables(db_url) >= TABLES


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_models_round_trip(container: Container) -> None:
    ts = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
    with container.uow() as uow:
        incident = Incident(dedup_key="gpu-node-001/3/ecc", scope="gpu", family="ecc",
                            hostname="gpu-node-001", gpu=3, severity="critical", title="DBE on GPU 3",
                            details={"xid": [48], "note": "ünïcode"}, opened_at=ts)
        uow.session.add(incident)
        uow.flush()
        uow.session.add(FindingRecord(ts=ts, hostname="gpu-node-001", gpu=3, uuid="GPU-abc", kind="ecc",
                                      severity="critical", score=0.97, detector="rules.ecc",
                                      evidence={"dbe_delta": 2.0}, incident_id=incident.id,
                                      predicted_failure_at=ts + timedelta(minutes=20)))
        uow.session.add(IncidentEvent(incident_id=incident.id, ts=ts, kind="opened", message="opened"))
        action = Action(incident_id=incident.id, runbook="drain_node", parameters={"grace_seconds": 30},
                        targets=["gpu-node-001"], plan_hash="a" * 64, idempotency_key="inc1-drain",
                        risk="high")
        uow.session.add(action)
        uow.flush()
        uow.session.add(Approval(action_id=action.id, approver="U01", channel="slack", decision="approve",
                                 plan_hash="a" * 64, expires_at=ts + timedelta(hours=1)))
        uow.commit()
        incident_id = incident.id

    with container.uow() as uow:
        got = uow.session.get(Incident, incident_id)
        assert got is not None
        assert got.opened_at == ts and got.opened_at.tzinfo is not None
        assert got.details == {"xid": [48], "note": "ünïcode"}
        assert got.findings[0].evidence == {"dbe_delta": 2.0}
        assert got.findings[0].predicted_failure_at == ts + timedelta(minutes=20)
        assert got.events[0].kind == "opened"
        assert got.actions[0].targets == ["gpu-node-001"]
        assert got.actions[0].approvals[0].expires_at == ts + timedelta(hours=1)


def test_idempotency_key_is_unique(container: Container) -> None:
    with container.uow() as uow:
        incident = Incident(dedup_key="k", scope="node", family="xid", hostname="n", severity="warning",
                            title="t")
        uow.session.add(incident)
        uow.flush()
        for _ in range(2):
            uow.session.add(Action(incident_id=incident.id, runbook="cordon_node", targets=["n"],
                                   plan_hash="b" * 64, idempotency_key="same-key"))
        with pytest.raises(IntegrityError):
            uow.flush()


def test_leaving_a_unit_of_work_without_commit_rolls_back(container: Container) -> None:
    with container.uow() as uow:
        uow.session.add(Incident(dedup_key="k", scope="node", family="xid", hostname="n", severity="info",
                                 title="never committed"))
        uow.flush()
    with container.uow() as uow:
        assert uow.session.query(Incident).count() == 0


def test_on_commit_callbacks_run_only_after_commit(container: Container) -> None:
    ran: list[str] = []
    with container.uow() as uow:
        uow.on_commit(lambda: ran.append("dropped"))
    assert ran == []
    with container.uow() as uow:
        uow.on_commit(lambda: ran.append("kept"))
        uow.commit()
    assert ran == ["kept"]
