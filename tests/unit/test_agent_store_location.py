"""The agent reads the store's URL as SQLAlchemy does, without SQLAlchemy."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from agent.store_location import store_location

URLS = ["sqlite:///./gpuops.db", "sqlite:////tmp/a%20b.db", "sqlite://", "sqlite:///:memory:",
        "sqlite:///x.db?timeout=3", "sqlite+pysqlite:///rel/x.db", "sqlite:////tmp/x#y.db",
        "postgresql+psycopg://u:p%40ss@db.example:5432/gpuops?sslmode=disable", "postgresql://u@db.example/gpuops",
        "postgres://db.example/gpuops", "mysql+pymysql://db.example/gpuops"]


@pytest.mark.parametrize("url", URLS)
def test_the_location_is_sqlalchemys_reading_of_the_url(url: str) -> None:
    expected, location = make_url(url), store_location(url)
    assert location.backend == expected.get_backend_name()
    if location.backend == "sqlite":
        assert location.sqlite_path == (expected.database or None)
    if location.backend == "postgresql":
        assert location.conninfo == expected.set(drivername="postgresql").render_as_string(hide_password=False)


def test_a_string_without_a_scheme_names_no_backend() -> None:
    assert store_location("gpuops.db").backend == ""
