"""A keyed audit chain: with the HMAC key held outside the database, someone with database access alone can
neither rewrite an event (recomputing every later hash by the public formula) nor cut the tail unnoticed once
a signed checkpoint of the head was exported. Events written before the key existed still verify, as unkeyed."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.store.audit import GENESIS_HASH, append_event, canonical_json, read_checkpoints, verify_chain
from gpuops.store.models import AuditEvent
from gpuops.wiring import Container, bootstrap

KEY = "k" * 40


@pytest.fixture
def keyed(db_url: str, tmp_path: Path) -> Iterator[Container]:
    migrate.upgrade(db_url)
    c = bootstrap(Settings(database_url=db_url, audit_key=KEY, audit_checkpoint_file=str(tmp_path / "cp.jsonl"),
                           audit_checkpoint_every=5))
    try:
        yield c
    finally:
        c.close()


def _append(container: Container, n: int) -> None:
    for i in range(n):
        with container.uow() as uow:
            append_event(uow.session, actor="policy", kind="verdict", incident_id=1, action_id=i,
                         data={"allowed": i % 2 == 0, "reasons": [f"r{i}"]})
            uow.commit()


def _disable_guards(container: Container) -> None:
    with container.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_delete"))


def _public_hash(ev: AuditEvent, prev_hash: str) -> str:
    body = canonical_json({"seq": ev.seq, "ts": ev.ts.isoformat(timespec="microseconds"), "actor": ev.actor,
                           "kind": ev.kind, "incident_id": ev.incident_id, "action_id": ev.action_id,
                           "data": ev.data, "prev_hash": prev_hash})
    return hashlib.sha256(body.encode()).hexdigest()


def _forge_from(container: Container, seq: int, actor: str) -> None:
    """What an attacker with database rights does: rewrite event `seq`, then recompute every later hash (and
    the head) with the public formula."""
    _disable_guards(container)
    with container.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = :a WHERE seq = :s"), {"a": actor, "s": seq})
    with container.session_factory() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
    prev = GENESIS_HASH
    with container.engine.begin() as conn:
        for ev in events:
            digest = ev.hash if ev.seq < seq else _public_hash(ev, prev)
            conn.execute(text("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s"),
                         {"p": prev, "h": digest, "s": ev.seq})
            prev = digest
        conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})


def _report(container: Container, **kw: object) -> list[tuple[int, str]]:
    with container.session_factory() as session:
        report = verify_chain(session, **kw)  # type: ignore[arg-type]
    return [(p.seq, p.problem) for p in report.problems]


def test_a_keyed_chain_verifies(keyed: Container) -> None:
    _append(keyed, 7)
    with keyed.session_factory() as session:
        report = verify_chain(session, batch=3)
    assert report.ok and report.checked == 7 and report.keyed == 7 and report.unkeyed == 0


def test_a_rewrite_with_every_later_hash_recomputed_is_detected(keyed: Container) -> None:
    _append(keyed, 6)
    _forge_from(keyed, 3, "someone-else")
    problems = _report(keyed)
    assert problems and problems[0][0] == 3, problems


def test_an_unkeyed_rewrite_also_fails_without_the_key_in_the_database(keyed: Container) -> None:
    _append(keyed, 4)
    _disable_guards(keyed)
    with keyed.engine.begin() as conn:  # downgrade: mark the events unkeyed and recompute by the public formula
        conn.execute(text("UPDATE audit_events SET key_id = NULL"))
    _forge_from(keyed, 2, "someone-else")
    problems = _report(keyed)
    assert problems and problems[0][0] <= 2, problems


def test_signed_checkpoints_are_exported_and_catch_a_truncated_tail(keyed: Container, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gpuops.audit")
    _append(keyed, 12)
    checkpoints = read_checkpoints((tmp_path / "cp.jsonl").read_text().splitlines())
    assert [c.seq for c in checkpoints] == [5, 10]
    assert any("audit checkpoint" in r.getMessage() and getattr(r, "audit_checkpoint", None) for r in caplog.records)
    _disable_guards(keyed)
    with keyed.session_factory() as session:
        kept = session.scalars(select(AuditEvent).where(AuditEvent.seq == 8)).one()
    with keyed.engine.begin() as conn:  # cut the tail and move the head back: the chain itself still links
        conn.execute(text("DELETE FROM audit_events WHERE seq > 8"))
        conn.execute(text("UPDATE audit_head SET seq = 8, hash = :h"), {"h": kept.hash})
    assert _report(keyed) == []
    problems = _report(keyed, checkpoints=checkpoints)
    assert problems and problems[0][0] == 9 and "checkpoint" in problems[0][1], problems


def test_a_forged_checkpoint_is_refused(keyed: Container, tmp_path: Path) -> None:
    _append(keyed, 5)
    lines = (tmp_path / "cp.jsonl").read_text().splitlines()
    forged = json.loads(lines[0]) | {"seq": 99}
    problems = _report(keyed, checkpoints=read_checkpoints([json.dumps(forged)]))
    assert problems and "signature" in problems[0][1]


def test_events_written_before_the_key_verify_as_unkeyed(db_url: str, keyed: Container) -> None:
    plain = bootstrap(Settings(database_url=db_url))
    try:
        _append(plain, 3)
    finally:
        plain.close()
    _append(keyed, 2)
    with keyed.session_factory() as session:
        report = verify_chain(session)
    assert report.ok and report.unkeyed == 3 and report.keyed == 2
    # An unkeyed event after keyed ones is a downgrade, not history.
    plain = bootstrap(Settings(database_url=db_url))
    try:
        _append(plain, 1)
    finally:
        plain.close()
    assert [seq for seq, _ in _report(keyed)] == [6]


def test_cli_audit_verify_reports_the_first_bad_event(keyed: Container, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from entrypoints.cli import cli

    _append(keyed, 6)
    monkeypatch.setenv("GPUOPS_DATABASE_URL", keyed.settings.database_url)
    key_file = tmp_path / "audit.key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("GPUOPS_AUDIT_KEY_FILE", str(key_file))
    ok = CliRunner().invoke(cli, ["audit", "verify", "--checkpoints", str(tmp_path / "cp.jsonl"), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True, ok.stdout
    _forge_from(keyed, 4, "someone-else")
    bad = CliRunner().invoke(cli, ["audit", "verify", "--checkpoints", str(tmp_path / "cp.jsonl")])
    assert bad.exit_code == 1 and "event 4" in bad.output, bad.output


def test_cli_audit_checkpoint_signs_the_head_now(keyed: Container, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from entrypoints.cli import cli

    _append(keyed, 3)
    monkeypatch.setenv("GPUOPS_DATABASE_URL", keyed.settings.database_url)
    monkeypatch.setenv("GPUOPS_AUDIT_KEY", KEY)
    monkeypatch.setenv("GPUOPS_AUDIT_CHECKPOINT_FILE", str(tmp_path / "now.jsonl"))
    signed = CliRunner().invoke(cli, ["audit", "checkpoint"])
    assert signed.exit_code == 0, signed.output
    (checkpoint,) = read_checkpoints((tmp_path / "now.jsonl").read_text().splitlines())
    assert checkpoint.seq == 3
    monkeypatch.delenv("GPUOPS_AUDIT_KEY")
    refused = CliRunner().invoke(cli, ["audit", "checkpoint"])
    assert refused.exit_code != 0 and "GPUOPS_AUDIT_KEY" in refused.output
