"""The audit trail: append-only and hash-chained. Each event's hash covers its fields and the previous
event's hash; `verify_chain` recomputes the chain and says which events were modified or removed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, UOWTransaction

from gpuops.store.models import AuditEvent, AuditHead, utcnow

GENESIS_HASH = "0" * 64
HEAD_ID = 1


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(
    *, seq: int, ts: datetime, actor: str, kind: str, incident_id: int | None, action_id: int | None,
    data: dict[str, Any], prev_hash: str,
) -> str:
    body = canonical_json({
        "seq": seq, "ts": ts.isoformat(timespec="microseconds"), "actor": actor, "kind": kind,
        "incident_id": incident_id, "action_id": action_id, "data": data, "prev_hash": prev_hash,
    })
    return hashlib.sha256(body.encode()).hexdigest()


def append_event(
    session: Session, *, actor: str, kind: str, data: dict[str, Any] | None = None,
    incident_id: int | None = None, action_id: int | None = None, ts: datetime | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction. The head row is locked (SELECT … FOR UPDATE on
    PostgreSQL; SQLite transactions are already serialised), so concurrent appenders queue up."""
    head = session.execute(select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()).scalar_one()
    payload = json.loads(canonical_json(data or {}))
    when = ts or utcnow()
    seq = head.seq + 1
    digest = event_hash(seq=seq, ts=when, actor=actor, kind=kind, incident_id=incident_id,
                        action_id=action_id, data=payload, prev_hash=head.hash)
    record = AuditEvent(seq=seq, ts=when, actor=actor, kind=kind, incident_id=incident_id,
                        action_id=action_id, data=payload, prev_hash=head.hash, hash=digest)
    session.add(record)
    head.seq, head.hash = seq, digest
    return record


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str


@dataclass
class ChainReport:
    """The result of a chain check: `ok` when every event verifies and none is missing."""

    checked: int = 0
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(session: Session, batch: int = 5000) -> ChainReport:
    """Recompute every hash in order. Reports modified events (hash mismatch), removed events (a gap in
    the sequence or a broken link) and a truncated tail (the head points past the last event)."""
    report = ChainReport()
    prev_hash, expected_seq = GENESIS_HASH, 1
    last_seq = 0
    stmt = select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch)
    for ev in session.scalars(stmt):
        report.checked += 1
        if ev.seq != expected_seq:
            missing = (f"event {expected_seq}" if ev.seq == expected_seq + 1
                       else f"events {expected_seq}..{ev.seq - 1}")
            report.problems.append(ChainProblem(expected_seq, f"{missing} deleted"))
        if ev.prev_hash != prev_hash and ev.seq == expected_seq:
            report.problems.append(ChainProblem(ev.seq, "link to the previous event broken"))
        recomputed = event_hash(seq=ev.seq, ts=ev.ts, actor=ev.actor, kind=ev.kind,
                                incident_id=ev.incident_id, action_id=ev.action_id,
                                data=ev.data, prev_hash=ev.prev_hash)
        if recomputed != ev.hash:
            report.problems.append(ChainProblem(ev.seq, "event modified: its hash does not match its content"))
        prev_hash, expected_seq, last_seq = ev.hash, ev.seq + 1, ev.seq
    head = session.get(AuditHead, HEAD_ID)
    if head is not None and head.seq > last_seq:
        report.problems.append(ChainProblem(last_seq + 1, f"events {last_seq + 1}..{head.seq} deleted from the end"))
    elif head is not None and head.seq == last_seq and last_seq and head.hash != prev_hash:
        report.problems.append(ChainProblem(last_seq, "head hash does not match the last event"))
    return report


@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: Session, _ctx: UOWTransaction, _instances: Any) -> None:
    """Through the ORM the trail is append-only; the database triggers guard against raw SQL."""
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEvent) and (obj in session.deleted or session.is_modified(obj)):
            raise PermissionError("the audit trail is append-only: events cannot be modified or deleted")
