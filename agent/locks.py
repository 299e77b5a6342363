"""One run of an incident's graph at a time, across processes. Two approvals arriving together (a double
click, Slack and the CLI) would otherwise resume the same thread twice and fork its checkpoints; the second
waits here, then finds the thread already moved on."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.store_location import store_location

LOCK_NAMESPACE = 0x67707573  # a fixed first key for PostgreSQL's two-key advisory locks


@contextmanager
def incident_lock(database_url: str | None, incident_id: int) -> Iterator[None]:
    """Hold an exclusive lock on the incident's thread: a PostgreSQL advisory lock, or for SQLite (one host)
    a file lock in a folder beside the database. No URL, or an in-memory database: nothing to share, no lock."""
    if not database_url:
        yield
        return
    location = store_location(database_url)
    if location.backend == "postgresql":
        from psycopg import Connection

        with Connection.connect(location.conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, incident_id))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, incident_id))
        return
    path = location.sqlite_path
    if location.backend != "sqlite" or not path or path == ":memory:":
        yield
        return
    # flock, not POSIX record locks: those are per process, and threads of one process must queue up too.
    # Lock files are never removed (removing one while another process waits on it would split the lock).
    folder = Path(f"{path}.agent-locks")
    folder.mkdir(exist_ok=True)
    with (folder / f"incident-{incident_id}").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
