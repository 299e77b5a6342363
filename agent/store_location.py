"""Where the store's database lives, read from its URL (SQLAlchemy's form) without the store's libraries: the
checkpointer and the incident locks sit in that same database."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote


@dataclass(frozen=True)
class StoreLocation:
    """A database URL taken apart: the backend (`sqlite`, `postgresql`, …), the SQLite file (None in
    memory), and for PostgreSQL a libpq connection URI without the SQLAlchemy driver name."""

    backend: str
    sqlite_path: str | None = None
    conninfo: str = ""


def store_location(database_url: str) -> StoreLocation:
    """Parse `database_url` as SQLAlchemy does: `sqlite:///relative.db`, `sqlite:////absolute.db`,
    `sqlite://` (in memory), `postgresql+psycopg://user:pass@host:5432/db?…`."""
    scheme, sep, rest = database_url.partition("://")
    if not sep:
        return StoreLocation(backend="")
    backend = scheme.partition("+")[0].lower()
    if backend == "sqlite":
        path = rest.partition("?")[0].partition("/")[2]  # after the (empty) host, before the query
        return StoreLocation(backend, sqlite_path=unquote(path) or None)
    if backend == "postgresql":
        return StoreLocation(backend, conninfo=f"postgresql://{rest}")
    return StoreLocation(backend)
