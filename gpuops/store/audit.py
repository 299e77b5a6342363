"""The audit trail: append-only and hash-chained. Each event's hash covers its fields and the previous
event's hash; `verify_chain` recomputes the chain and says which events were modified or removed.

With an audit key (GPUOPS_AUDIT_KEY or GPUOPS_AUDIT_KEY_FILE, held outside the database) each hash is an
HMAC-SHA256 under that key, so someone with database access alone cannot recompute the chain after rewriting
an event; every `checkpoint_every` events a signed checkpoint of the head goes to the log (and optionally a
file), outside the database, so a tail cut off together with the head is found when verifying against it.
Events written before the key existed keep the plain SHA-256 formula (`key_id` NULL) and verify as unkeyed."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, UOWTransaction, sessionmaker

from gpuops.errors import ConfigError
from gpuops.store.db import READ_ONLY
from gpuops.store.models import AuditEvent, AuditHead, utcnow

GENESIS_HASH = "0" * 64
HEAD_ID = 1
MIN_KEY_CHARS = 32
SIGNING_INFO = "gpuops.audit.signing"        # Session.info key: the AuditSigning of this session's factory
_PENDING_CHECKPOINT = "gpuops.audit.pending_checkpoint"

log = logging.getLogger("gpuops.audit")


@dataclass(frozen=True)
class AuditKey:
    """The chain's HMAC key. Only its id (a hash of it) is ever stored beside the events."""

    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"gpuops-audit-key-id\0" + self.secret).hexdigest()[:16]

    def mac(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditSigning:
    """How a session factory's sessions sign the chain and export checkpoints of its head."""

    key: AuditKey
    checkpoint_file: str | None = None
    checkpoint_every: int = 1000


def audit_key_from(*, key: str | None, key_file: str | None) -> AuditKey | None:
    """The key from GPUOPS_AUDIT_KEY or the file GPUOPS_AUDIT_KEY_FILE names (None: an unkeyed chain)."""
    if key and key_file:
        raise ConfigError("GPUOPS_AUDIT_KEY and GPUOPS_AUDIT_KEY_FILE are both set; set only one")
    name, text = "GPUOPS_AUDIT_KEY", key
    if key_file:
        name = "GPUOPS_AUDIT_KEY_FILE"
        try:
            text = Path(key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"GPUOPS_AUDIT_KEY_FILE: cannot read {key_file}: {exc.strerror}") from exc
    if not text:
        return None
    if len(text) < MIN_KEY_CHARS:
        raise ConfigError(f"{name}: too short; expected a random secret of at least {MIN_KEY_CHARS} characters "
                          "(e.g. the output of `openssl rand -hex 32`)")
    return AuditKey(text.encode())


def sign_sessions(factory: sessionmaker[Session], signing: AuditSigning | None) -> None:
    """Have every session of `factory` append keyed events (and verify with the key)."""
    if signing is not None:
        factory.configure(info={SIGNING_INFO: signing})


def signing_of(session: Session) -> AuditSigning | None:
    found = session.info.get(SIGNING_INFO)
    return found if isinstance(found, AuditSigning) else None


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at `seq`, signed with the key: kept outside the database, it proves that event `seq`
    existed with this hash."""

    seq: int
    hash: str
    at: str
    key_id: str
    mac: str

    @staticmethod
    def _body(seq: int, digest: str, at: str, key_id: str) -> str:
        return canonical_json({"checkpoint": seq, "hash": digest, "at": at, "key_id": key_id})

    @classmethod
    def sign(cls, key: AuditKey, seq: int, digest: str, at: datetime) -> Checkpoint:
        when = at.isoformat(timespec="seconds")
        return cls(seq, digest, when, key.key_id, key.mac(cls._body(seq, digest, when, key.key_id)))

    def signed_by(self, key: AuditKey) -> bool:
        expected = key.mac(self._body(self.seq, self.hash, self.at, self.key_id))
        return self.key_id == key.key_id and hmac.compare_digest(expected, self.mac)

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": self.at, "key_id": self.key_id, "mac": self.mac}

    def line(self) -> str:
        return canonical_json(self.as_dict())


def read_checkpoints(lines: Iterable[str]) -> list[Checkpoint]:
    """Checkpoints from a checkpoint file, or from gpuops' log (JSON or text lines); other lines are skipped."""
    found: list[Checkpoint] = []
    for line in lines:
        start = line.find("{")
        if start < 0:
            continue
        try:
            value = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("audit_checkpoint"), dict):
            value = value["audit_checkpoint"]
        try:
            found.append(Checkpoint(seq=int(value["seq"]), hash=str(value["hash"]), at=str(value["at"]),
                                    key_id=str(value["key_id"]), mac=str(value["mac"])))
        except (KeyError, TypeError, ValueError):
            continue
    return found


def checkpoint_head(session: Session) -> Checkpoint | None:
    """Sign the current head and export it now (None: no key, or an empty chain)."""
    signing = signing_of(session)
    head = session.get(AuditHead, HEAD_ID)
    if signing is None or head is None or head.seq == 0:
        return None
    checkpoint = Checkpoint.sign(signing.key, head.seq, head.hash, utcnow())
    _export(checkpoint, signing)
    return checkpoint


def _export(checkpoint: Checkpoint, signing: AuditSigning) -> None:
    log.info("audit checkpoint %s", checkpoint.line(), extra={"audit_checkpoint": checkpoint.as_dict()})
    if signing.checkpoint_file:
        try:
            with open(signing.checkpoint_file, "a", encoding="utf-8") as out:
                out.write(checkpoint.line() + "\n")
        except OSError as exc:
            log.error("could not write the audit checkpoint to GPUOPS_AUDIT_CHECKPOINT_FILE: %s", exc.strerror,
                      extra={"audit_checkpoint": checkpoint.as_dict()})


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(
    *, seq: int, ts: datetime, actor: str, kind: str, incident_id: int | None, action_id: int | None,
    data: dict[str, Any], prev_hash: str, key: AuditKey | None = None,
) -> str:
    """SHA-256 of the event's canonical JSON, or with a key, HMAC-SHA256 of it with the key's id included."""
    fields: dict[str, Any] = {
        "seq": seq, "ts": ts.isoformat(timespec="microseconds"), "actor": actor, "kind": kind,
        "incident_id": incident_id, "action_id": action_id, "data": data, "prev_hash": prev_hash,
    }
    if key is None:
        return hashlib.sha256(canonical_json(fields).encode()).hexdigest()
    return key.mac(canonical_json({**fields, "key_id": key.key_id}))


def append_event(
    session: Session, *, actor: str, kind: str, data: dict[str, Any] | None = None,
    incident_id: int | None = None, action_id: int | None = None, ts: datetime | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction. The head row is locked (SELECT … FOR UPDATE on
    PostgreSQL; SQLite transactions are already serialised), so concurrent appenders queue up. With a key,
    the event is signed, and every `checkpoint_every` events a checkpoint is exported once the transaction
    commits."""
    head = session.execute(select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()).scalar_one()
    signing = signing_of(session)
    key = signing.key if signing else None
    payload = json.loads(canonical_json(data or {}))
    when = ts or utcnow()
    seq = head.seq + 1
    digest = event_hash(seq=seq, ts=when, actor=actor, kind=kind, incident_id=incident_id,
                        action_id=action_id, data=payload, prev_hash=head.hash, key=key)
    record = AuditEvent(seq=seq, ts=when, actor=actor, kind=kind, incident_id=incident_id,
                        action_id=action_id, data=payload, prev_hash=head.hash, hash=digest,
                        key_id=key.key_id if key else None)
    session.add(record)
    head.seq, head.hash = seq, digest
    if signing is not None and key is not None and seq % signing.checkpoint_every == 0:
        session.info[_PENDING_CHECKPOINT] = Checkpoint.sign(key, seq, digest, utcnow())
    return record


@event.listens_for(Session, "after_commit")
def _export_pending_checkpoint(session: Session) -> None:
    # After the commit only: a checkpoint of an event that was rolled back would later read as a cut tail.
    checkpoint = session.info.pop(_PENDING_CHECKPOINT, None)
    signing = signing_of(session)
    if isinstance(checkpoint, Checkpoint) and signing is not None:
        _export(checkpoint, signing)


@event.listens_for(Session, "after_rollback")
def _drop_pending_checkpoint(session: Session) -> None:
    session.info.pop(_PENDING_CHECKPOINT, None)


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str


@dataclass
class ChainReport:
    """The result of a chain check: `ok` when every event verifies and none is missing. `keyed` events were
    checked with the key; `unkeyed` ones (written before the chain had a key) only with the public formula."""

    checked: int = 0
    problems: list[ChainProblem] = field(default_factory=list)
    keyed: int = 0
    unkeyed: int = 0
    unverified: int = 0          # keyed events whose signature could not be checked: no key given
    checkpoints: int = 0         # signed checkpoints the chain was checked against
    from_seq: int = 1            # the first event checked (after a trusted anchor, when there was one)
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    complete: bool = True        # False: stopped after max_events; the rest is for the next call

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> ChainProblem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None

    def notes(self) -> list[str]:
        said: list[str] = []
        if self.unkeyed:
            said.append(f"{self.unkeyed} event(s) written before the chain had a key: checked with the public "
                        "formula only, which anyone with database access can recompute")
        if self.unverified:
            said.append(f"{self.unverified} keyed event(s) not authenticated: no audit key given")
        return said

    def as_dict(self) -> dict[str, Any]:
        first = self.first_problem
        return {"ok": self.ok, "checked": self.checked, "keyed": self.keyed, "unkeyed": self.unkeyed,
                "unverified": self.unverified, "checkpoints": self.checkpoints, "from_seq": self.from_seq,
                "last_seq": self.last_seq, "verified_up_to": self.last_seq, "complete": self.complete,
                "first_bad_seq": first.seq if first else None, "notes": self.notes(),
                "problems": [{"seq": p.seq, "problem": p.problem} for p in self.problems]}


def _trusted(checkpoints: Sequence[Checkpoint], key: AuditKey | None, report: ChainReport) -> dict[int, str]:
    """seq -> hash of the checkpoints that carry a valid signature under `key`."""
    trusted: dict[int, str] = {}
    for cp in checkpoints:
        if key is None:
            report.problems.append(ChainProblem(cp.seq, f"checkpoint at event {cp.seq} cannot be checked: "
                                                        "no audit key given"))
        elif not cp.signed_by(key):
            report.problems.append(ChainProblem(cp.seq, f"checkpoint at event {cp.seq}: signature invalid "
                                                        "(forged, altered, or signed with another key)"))
        else:
            trusted[cp.seq] = cp.hash
    report.checkpoints = len(trusted)
    return trusted


def verify_chain(session: Session, batch: int = 5000, *, checkpoints: Sequence[Checkpoint] = (),
                 key: AuditKey | None = None, after: tuple[int, str] | None = None,
                 max_events: int | None = None) -> ChainReport:
    """Recompute every hash in order, a page of `batch` events at a time. Reports modified events (hash or
    signature mismatch, an unkeyed event after keyed ones), removed events (a gap in the sequence or a broken
    link) and a truncated tail (the head, or a signed checkpoint, points past the last event). `key` defaults
    to the session's signing key. `after`, a (seq, hash) the caller already trusts (verified before, or a
    signed checkpoint), checks only the events after it, once that event is found unchanged; `max_events`
    stops early (`complete` is then False)."""
    signing = signing_of(session)
    key = key or (signing.key if signing else None)
    report = ChainReport()
    trusted = _trusted(checkpoints, key, report)
    prev_hash, expected_seq, keyed_seen = GENESIS_HASH, 1, False
    if after is not None and after[0] > 0:
        anchor = session.get(AuditEvent, after[0])
        if anchor is None or anchor.hash != after[1]:
            report.problems.append(ChainProblem(after[0], f"event {after[0]} changed or deleted since it was "
                                                          "verified"))
        prev_hash, expected_seq = after[1], after[0] + 1
        keyed_seen = anchor is not None and anchor.key_id is not None
    report.from_seq = expected_seq
    report.last_seq, report.last_hash = expected_seq - 1, prev_hash
    while True:
        size = batch if max_events is None else min(batch, max_events - report.checked)
        page = list(session.scalars(select(AuditEvent).where(AuditEvent.seq > report.last_seq)
                                    .order_by(AuditEvent.seq).limit(size))) if size > 0 else []
        for ev in page:
            keyed_seen = _check_event(ev, expected_seq, prev_hash, key, keyed_seen, trusted, report)
            prev_hash, expected_seq = ev.hash, ev.seq + 1
            report.last_seq, report.last_hash = ev.seq, ev.hash
        if max_events is not None and report.checked >= max_events:
            more = session.scalar(select(AuditEvent.seq).where(AuditEvent.seq > report.last_seq).limit(1))
            if more is not None:
                report.complete = False
                return report  # the tail checks wait for the call that reaches the end
        if len(page) < size or size == 0:
            break
    last_seq = report.last_seq
    beyond = max((seq for seq in trusted if seq > last_seq), default=None)
    if beyond is not None:
        report.problems.append(ChainProblem(last_seq + 1, f"events {last_seq + 1}..{beyond} deleted from the end "
                                                          f"(a signed checkpoint saw event {beyond})"))
    head = session.get(AuditHead, HEAD_ID)
    if head is not None and head.seq > last_seq:
        report.problems.append(ChainProblem(last_seq + 1, f"events {last_seq + 1}..{head.seq} deleted from the end"))
    elif head is not None and head.seq == last_seq and last_seq and head.hash != prev_hash:
        report.problems.append(ChainProblem(last_seq, "head hash does not match the last event"))
    return report


_anchors: weakref.WeakKeyDictionary[Engine, tuple[int, str]] = weakref.WeakKeyDictionary()
_anchors_lock = threading.Lock()


@contextmanager
def read_only_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session of `factory` (with its signing key) on a connection that only reads: on SQLite it begins
    deferred, so it never takes or waits for the write lock."""
    engine = factory.kw["bind"]
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        with factory(bind=conn) as session:
            yield session
            session.rollback()


def verify_recent(factory: sessionmaker[Session], *, max_events: int = 20_000, batch: int = 2000) -> ChainReport:
    """Verify what was appended since this process last verified the chain (or since the newest signed
    checkpoint in GPUOPS_AUDIT_CHECKPOINT_FILE), at most `max_events` per call, read-only. The whole chain is
    `gpuops audit verify`'s job."""
    engine = factory.kw["bind"]
    with _anchors_lock:
        anchor = _anchors.get(engine)
    with read_only_session(factory) as session:
        signing = signing_of(session)
        newest = _newest_signed_checkpoint(signing)
        if newest is not None and (anchor is None or newest.seq > anchor[0]):
            anchor = (newest.seq, newest.hash)
        report = verify_chain(session, batch, after=anchor, max_events=max_events)
    if report.ok:
        with _anchors_lock:
            known = _anchors.get(engine)
            if known is None or report.last_seq > known[0]:
                _anchors[engine] = (report.last_seq, report.last_hash)
    return report


_whole_lock = threading.Lock()


def verify_whole(factory: sessionmaker[Session], *, batch: int = 2000) -> ChainReport:
    """The whole chain, read-only (never the SQLite write lock), a page of `batch` events at a time; one whole
    verification runs at a time in this process, so many viewers queue behind one another instead of each
    taking a core. The dashboard's audit page shows this; the API's incremental `verify_recent` is cheaper."""
    with _whole_lock, read_only_session(factory) as session:
        return verify_chain(session, batch)


def _newest_signed_checkpoint(signing: AuditSigning | None) -> Checkpoint | None:
    if signing is None or not signing.checkpoint_file:
        return None
    try:
        lines = Path(signing.checkpoint_file).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    valid = [c for c in read_checkpoints(lines[-50:]) if c.signed_by(signing.key)]
    return max(valid, key=lambda c: c.seq, default=None)


def _check_event(ev: AuditEvent, expected_seq: int, prev_hash: str, key: AuditKey | None, keyed_seen: bool,
                 trusted: dict[int, str], report: ChainReport) -> bool:
    """Check one event against its predecessor; returns whether a keyed event has been seen."""
    report.checked += 1
    if ev.seq != expected_seq:
        missing = f"event {expected_seq}" if ev.seq == expected_seq + 1 else f"events {expected_seq}..{ev.seq - 1}"
        report.problems.append(ChainProblem(expected_seq, f"{missing} deleted"))
    if ev.prev_hash != prev_hash and ev.seq == expected_seq:
        report.problems.append(ChainProblem(ev.seq, "link to the previous event broken"))
    fields: dict[str, Any] = dict(seq=ev.seq, ts=ev.ts, actor=ev.actor, kind=ev.kind, incident_id=ev.incident_id,
                                  action_id=ev.action_id, data=ev.data, prev_hash=ev.prev_hash)
    if ev.key_id is None:
        report.unkeyed += 1
        if keyed_seen:
            report.problems.append(ChainProblem(ev.seq, "unkeyed event after keyed ones: rewritten, or written "
                                                        "without the audit key"))
        elif event_hash(**fields) != ev.hash:
            report.problems.append(ChainProblem(ev.seq, "event modified: its hash does not match its content"))
    else:
        keyed_seen = True
        report.keyed += 1
        if key is None:
            report.unverified += 1
        elif ev.key_id != key.key_id:
            report.problems.append(ChainProblem(ev.seq, f"signed with another key (id {ev.key_id[:16]}): give "
                                                        "that key to verify it"))
        elif not hmac.compare_digest(event_hash(**fields, key=key), ev.hash):
            report.problems.append(ChainProblem(ev.seq, "event modified: its signature does not match its content"))
    if ev.seq in trusted and trusted[ev.seq] != ev.hash:
        report.problems.append(ChainProblem(ev.seq, f"event {ev.seq} differs from the signed checkpoint"))
    return keyed_seen


@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: Session, _ctx: UOWTransaction, _instances: Any) -> None:
    """Through the ORM the trail is append-only; the database triggers guard against raw SQL."""
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEvent) and (obj in session.deleted or session.is_modified(obj)):
            raise PermissionError("the audit trail is append-only: events cannot be modified or deleted")
