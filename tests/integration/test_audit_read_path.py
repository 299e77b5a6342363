"""`/api/audit` verifies the chain off the write path: on SQLite it never takes the write lock (a viewer cannot
stall the embedded store), and it verifies incrementally, from what it verified last, a page at a time."""

from __future__ import annotations

import base64
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from gpuops.store.audit import append_event, verify_recent
from gpuops.wiring import Container
from tests.web_server import PASSWORDS, WebServer, serve_on, sign_in, web_container


@pytest.fixture
def web(sqlite_url: str) -> Iterator[WebServer]:
    with serve_on(sqlite_url) as server:
        yield server


def _append(container: Container, n: int) -> None:
    with container.uow() as uow:
        for i in range(n):
            append_event(uow.session, actor="policy", kind="verdict", incident_id=1, action_id=i, data={"i": i})
        uow.commit()


def _viewer() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"vera:{PASSWORDS['vera']}".encode()).decode()}


def test_verification_does_not_wait_for_the_sqlite_write_lock(web: WebServer, tmp_path: Path) -> None:
    _append(web.container, 40)
    writer = sqlite3.connect(tmp_path / "gpuops.db", isolation_level=None, timeout=1)
    writer.execute("BEGIN IMMEDIATE")  # someone is writing (and holds the write lock) for a while
    try:
        answer = httpx.get(f"{web.url}/api/audit?limit=5", headers=_viewer(), timeout=10)
    except httpx.ReadTimeout:
        pytest.fail("/api/audit waited for the write lock")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["events"]) == 5 and body["chain"]["ok"] is True and body["chain"]["verified_up_to"] == 40


def test_verification_is_incremental_and_paginated(sqlite_url: str) -> None:
    container = web_container(sqlite_url)
    try:
        _append(container, 25)
        first = verify_recent(container.session_factory, max_events=10, batch=4)
        assert first.ok and first.checked == 10 and not first.complete and first.last_seq == 10
        second = verify_recent(container.session_factory, max_events=100, batch=4)
        assert second.ok and second.checked == 15 and second.complete and second.last_seq == 25
        _append(container, 3)
        with container.engine.begin() as conn:  # tampering after what was verified is found
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
            conn.execute(text("UPDATE audit_events SET actor = 'x' WHERE seq = 27"))
        third = verify_recent(container.session_factory)
        assert third.checked == 3 and [p.seq for p in third.problems] == [27]
        assert [p.seq for p in verify_recent(container.session_factory).problems] == [27]  # not skipped next time
        with container.engine.begin() as conn:  # and so is a rewrite of the last event it verified (its anchor)
            conn.execute(text("UPDATE audit_events SET actor = 'x', hash = :h WHERE seq = 25"), {"h": "e" * 64})
        assert 25 in [p.seq for p in verify_recent(container.session_factory).problems]
    finally:
        container.close()


def test_the_audit_page_checks_the_whole_chain_without_the_write_lock(web: WebServer, tmp_path: Path) -> None:
    _append(web.container, 40)
    with sign_in(web.url, "vera") as client:
        writer = sqlite3.connect(tmp_path / "gpuops.db", isolation_level=None, timeout=1)
        writer.execute("BEGIN IMMEDIATE")
        try:
            page = client.get("/audit")
        except httpx.ReadTimeout:
            pytest.fail("the audit page waited for the write lock")
        finally:
            writer.execute("ROLLBACK")
            writer.close()
    assert page.status_code == 200, page.text
    assert re.search(r"Chain OK: \d+ event\(s\) verified", page.text)
