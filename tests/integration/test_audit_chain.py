"""The audit trail is append-only and hash-chained: tampering with a row is detected and located."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from gpuops.store.audit import append_event, verify_chain
from gpuops.store.models import AuditEvent
from gpuops.wiring import Container


def _append(container: Container, n: int) -> None:
    with container.uow() as uow:
        for i in range(n):
            append_event(uow.session, actor="policy", kind="verdict", incident_id=1, action_id=i,
                         data={"allowed": i % 2 == 0, "reasons": [f"r{i}"], "score": i / 3})
        uow.commit()


def _disable_guards(container: Container) -> None:
    """What an attacker with database rights would do before editing the trail."""
    with container.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
            conn.execute(text("DROP TRIGGER audit_events_no_delete"))


def _report(container: Container) -> list[tuple[int, str]]:
    with container.uow() as uow:
        report = verify_chain(uow.session)
    return [(p.seq, p.problem) for p in report.problems]


def test_intact_chain_verifies(container: Container) -> None:
    _append(container, 5)
    with container.uow() as uow:
        report = verify_chain(uow.session)
    assert report.ok and report.checked == 5


def test_modified_event_is_detected_and_located(container: Container) -> None:
    _append(container, 5)
    _disable_guards(container)
    with container.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 3"))
    problems = _report(container)
    assert problems and problems[0][0] == 3 and "modified" in problems[0][1]


def test_modified_payload_is_detected(container: Container) -> None:
    _append(container, 4)
    _disable_guards(container)
    with container.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET data = '{\"allowed\": true}' WHERE seq = 2"))
    assert [seq for seq, problem in _report(container) if "modified" in problem] == [2]


def test_deleted_event_is_detected_and_located(container: Container) -> None:
    _append(container, 5)
    _disable_guards(container)
    with container.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    problems = _report(container)
    assert (2, "event 2 deleted") in problems


def test_deleted_tail_is_detected(container: Container) -> None:
    _append(container, 5)
    _disable_guards(container)
    with container.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq >= 4"))
    assert any(seq == 4 and "deleted from the end" in p for seq, p in _report(container))


def test_database_refuses_raw_updates_and_deletes(container: Container) -> None:
    _append(container, 2)
    for statement in ("UPDATE audit_events SET actor = 'x' WHERE seq = 1", "DELETE FROM audit_events"):
        with pytest.raises(DatabaseError, match="append-only"), container.engine.begin() as conn:
            conn.execute(text(statement))
    assert _report(container) == []


def test_orm_refuses_to_modify_events(container: Container) -> None:
    _append(container, 1)
    with container.uow() as uow:
        event = uow.session.get(AuditEvent, 1)
        assert event is not None
        event.actor = "forged"
        with pytest.raises(PermissionError, match="append-only"):
            uow.flush()


def test_concurrent_appenders_keep_one_linear_chain(container: Container) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                _append(container, 2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    with container.uow() as uow:
        report = verify_chain(uow.session)
    assert report.ok and report.checked == 60
