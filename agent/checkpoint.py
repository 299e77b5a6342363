"""The graph's checkpointer lives in the store's own database, so any process that reaches the store (the
daemon, the Slack handler, the dashboard, `gpuops approve`) can resume an incident's thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from agent.errors import CheckpointConfigError
from agent.store_location import store_location


@contextmanager
def open_checkpointer(database_url: str) -> Iterator[BaseCheckpointSaver[Any]]:
    """A set-up checkpointer on the database at `database_url` (SQLite file or PostgreSQL), closed on exit."""
    location = store_location(database_url)
    backend = location.backend
    if backend == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = location.sqlite_path or ":memory:"
        # The saver serialises its own use of the connection with a lock, so threads may share it.
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
        try:
            saver = SqliteSaver(conn)
            saver.setup()
            yield saver
        finally:
            conn.close()
        return
    if backend == "postgresql":
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg import Connection
        from psycopg.rows import dict_row

        with Connection.connect(location.conninfo, autocommit=True, prepare_threshold=0,
                                row_factory=dict_row) as pg_conn:
            pg = PostgresSaver(pg_conn)
            pg.setup()
            yield pg
        return
    raise CheckpointConfigError(f"GPUOPS_DATABASE_URL: no checkpointer for the {backend!r} backend; "
                                "use sqlite or postgresql")
