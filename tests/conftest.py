"""Shared fixtures: fresh databases per test (SQLite file, or a new database on the real PostgreSQL),
free loopback ports, and a way to run `gpuops` commands as real processes."""

from __future__ import annotations

import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gpuops.config import Settings
from gpuops.logs import CHATTY_LIBRARIES
from gpuops.store import migrate
from gpuops.wiring import Container, bootstrap
from tests.waiting import wait_for

POSTGRES_ADMIN_URL = os.environ.get(
    "GPUOPS_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)
REPO_ROOT = Path(__file__).resolve().parent.parent
GPUOPS = str(Path(sys.executable).parent / "gpuops")
FILE_SECONDS = Path(__file__).with_name("file_seconds.json")
"""Each test file's seconds in a recent whole run (setup, call and teardown summed), refreshed with
`GPUOPS_RECORD_FILE_SECONDS=1 make test`. Only the order of the run depends on it."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest files first. `--dist loadfile` hands each worker whole files in collection order; a long file
    picked last keeps one worker busy while the other waits, and with the long ones first the workers end
    together. A file not recorded yet counts as the median; the order inside a file is kept."""
    try:
        seconds: dict[str, float] = json.loads(FILE_SECONDS.read_text())
    except (OSError, ValueError):
        return
    usual = statistics.median(seconds.values()) if seconds else 0.0
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], usual))


_file_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("GPUOPS_RECORD_FILE_SECONDS"):
        path = report.nodeid.split("::")[0]
        _file_seconds[path] = _file_seconds.get(path, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _file_seconds and not hasattr(session.config, "workerinput"):  # the controller holds every worker's reports
        FILE_SECONDS.write_text(json.dumps({k: round(v, 1) for k, v in sorted(_file_seconds.items())}, indent=0)
                                + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gpuops.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty database on the real PostgreSQL, dropped afterwards."""
    name = f"gpuops_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on the real PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def container(db_url: str) -> Iterator[Container]:
    migrate.upgrade(db_url)
    c = bootstrap(Settings(database_url=db_url))
    try:
        yield c
    finally:
        c.close()


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> httpx.Response:
    """Poll `url` until it answers (any status) or the deadline passes; fail at once if `proc` exits."""

    def answer() -> httpx.Response:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}: {out}")
        return httpx.get(url, timeout=2.0)

    return wait_for(answer, timeout=timeout, interval=0.1, message=f"{url} did not answer",
                    ignoring=(httpx.TransportError,))


def gpuops_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUOPS_")}
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _reset_gpuops_logging() -> Iterator[None]:
    """Undo what `configure_logging` (test_logs, every command a test runs in-process) does to the process: the
    root logger's level, its gpuops handler and the chatty libraries' levels. Only gpuops' handler is removed:
    pytest installs its own capturing handlers afresh for each phase of a test."""
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *CHATTY_LIBRARIES)}
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_gpuops", False):
            root.removeHandler(handler)
            handler.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
